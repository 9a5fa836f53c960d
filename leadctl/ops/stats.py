"""The figures `leadctl stats` shows, gathered from what every host leaves in Redis and PostgreSQL.

Statuses are counts of leads: PostgreSQL (the system of record) says which leads are finished and
which are not; Redis says how many unfinished ones are pending (read from the stream, not yet
acknowledged) rather than queued. A lead being sent (``sending`` in PostgreSQL) is pending; so is one
whose entry was read but not yet claimed. Each lead is in exactly one of STATUSES, so per channel they
add up to ``leads``. Rates, retries, latency and spend come from the counters of leadctl.send.metrics.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from leadctl.config import CHANNELS, Settings
from leadctl.connections import (
    Endpoints,
    open_postgres,
    open_redis,
    postgres_unreachable,
    redis_unreachable,
)
from leadctl.errors import DependencyError, LeadctlError
from leadctl.ops import alerts
from leadctl.ops.cost import cost_table, spend
from leadctl.queue import keys
from leadctl.send import metrics
from leadctl.send.heartbeats import Heartbeat, live_workers
from leadctl.store.reports import DeliveryGroup, delivery_groups, receipt_figures, suppression_sizes

STATUSES: tuple[str, ...] = ("queued", "pending", "sent", "failed", "dead", "in_doubt", "suppressed")
FINISHED: tuple[str, ...] = ("sent", "failed", "dead", "in_doubt", "suppressed")
_OLDEST_SAMPLE = 100  # pending entries (lowest ids) whose idle time is looked at


@dataclass(frozen=True, slots=True)
class QueueState:
    """A channel's stream: pending entries, longest idle among the oldest, oldest entry, dead letters."""

    pending: int
    oldest_pending_s: float
    oldest_entry: float | None
    dead_letters: int


def _entry_time(entry_id: bytes) -> float:
    return int(entry_id.split(b"-", 1)[0]) / 1000


def queue_states(client: redis.Redis, namespace: str, partitions: int = 1) -> dict[str, QueueState]:
    """Every channel's stream state, over its partitions, in one pipeline (a stream never used reads
    as empty)."""
    pipe = client.pipeline(transaction=False)
    for channel in CHANNELS:
        for stream in keys.streams(namespace, channel, partitions):
            pipe.xpending(stream, keys.GROUP)
            pipe.xpending_range(stream, keys.GROUP, min="-", max="+", count=_OLDEST_SAMPLE)
            pipe.xrange(stream, count=1)
        pipe.xlen(keys.dead_letters(namespace, channel))
    replies = iter(pipe.execute(raise_on_error=False))
    states: dict[str, QueueState] = {}
    for channel in CHANNELS:
        pending, idle_ms, oldest_entry = 0, 0, None
        for _ in range(partitions):
            summary, oldest, first = next(replies), next(replies), next(replies)
            if isinstance(summary, redis.ResponseError):  # NOGROUP: nothing was ever queued here
                summary, oldest = {"pending": 0}, []
            for reply in (summary, oldest, first):
                if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                    raise reply
            pending += int(summary["pending"])
            idle_ms = max([idle_ms, *(entry["time_since_delivered"] for entry in oldest)])
            if first:
                queued_at = _entry_time(first[0][0])
                oldest_entry = queued_at if oldest_entry is None else min(oldest_entry, queued_at)
        dead = next(replies)
        if isinstance(dead, Exception):
            raise dead
        states[channel] = QueueState(pending, round(idle_ms / 1000, 1), oldest_entry, int(dead))
    return states


def count_by_status(groups: list[DeliveryGroup]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for group in groups:
        counts[group.status] += group.leads
    return counts


def status_figures(counts: Counter[str], pending_entries: int) -> dict[str, int]:
    """The seven statuses of some leads; ``pending_entries``: stream entries read and not acknowledged."""
    unfinished = counts["queued"] + counts["sending"]
    pending = min(unfinished, max(pending_entries, counts["sending"]))
    return {
        "leads": unfinished + sum(counts[s] for s in FINISHED),
        "queued": unfinished - pending,
        "pending": pending,
        **{status: counts[status] for status in FINISHED},
    }


def _oldest_claim(groups: list[DeliveryGroup]) -> float:
    return round(max((g.oldest_claim_s or 0.0 for g in groups if g.status == "sending"), default=0.0), 1)


def channel_stats(
    client: redis.Redis, conn: psycopg.Connection, namespace: str, partitions: int = 1
) -> dict[str, dict[str, int]]:
    """Per channel: ``leads`` and the seven statuses, which add up to it."""
    groups = delivery_groups(conn, namespace)
    states = queue_states(client, namespace, partitions)
    return {
        channel: status_figures(
            count_by_status([g for g in groups if g.channel == channel]), states[channel].pending
        )
        for channel in CHANNELS
    }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every figure at one instant, plus what the views and the Prometheus collector draw from."""

    taken_at: float
    namespace: str
    channels: dict[str, dict[str, Any]]
    campaigns: dict[str, dict[str, Any]]
    providers: dict[str, dict[str, Any]]
    workers: list[dict[str, Any]]
    alerts: list[alerts.Alert]
    cost: dict[str, Any]
    series: dict[str, list[int]]
    """Leads finished per minute over the last 15 minutes, oldest first, per channel."""
    groups: list[DeliveryGroup]
    counters: dict[str, metrics.ChannelCounters]

    def as_json(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "campaigns": self.campaigns,
            "providers": self.providers,
            "workers": self.workers,
            "alerts": [alert.as_json() for alert in self.alerts],
            "cost": self.cost,
        }


def _figures(statuses: dict[str, int], oldest_pending_s: float, *more: dict[str, Any]) -> dict[str, Any]:
    """One group's figures in the documented order: leads, queued, pending, oldest_pending_s, ..."""
    figures: dict[str, Any] = {key: statuses[key] for key in ("leads", "queued", "pending")}
    figures["oldest_pending_s"] = oldest_pending_s
    figures.update((status, statuses[status]) for status in FINISHED)
    for extra in more:
        figures.update(extra)
    return figures


@dataclass(frozen=True, slots=True)
class _Reads:
    """Everything read from PostgreSQL and Redis for one snapshot."""

    settings: Settings
    now: float
    groups: list[DeliveryGroup]
    suppressions: dict[str, int]
    states: dict[str, QueueState]
    counters: dict[str, metrics.ChannelCounters]
    workers: list[Heartbeat]


def _channels(reads: _Reads) -> tuple[dict[str, dict[str, Any]], dict[str, alerts.Readings]]:
    channels: dict[str, dict[str, Any]] = {}
    readings: dict[str, alerts.Readings] = {}
    for channel in CHANNELS:
        state, mine = reads.states[channel], reads.counters[channel]
        groups = [g for g in reads.groups if g.channel == channel]
        statuses = status_figures(count_by_status(groups), state.pending)
        deferred = sum(g.deferred for g in groups)  # waiting for their send window: not a backlog
        backlog = statuses["queued"] + statuses["pending"] - deferred
        since = max((t for t in (mine.last_send, state.oldest_entry) if t is not None), default=reads.now)
        stalled = round(max(0.0, reads.now - since), 1) if backlog else 0.0
        channels[channel] = figures = _figures(
            statuses,
            state.oldest_pending_s,
            metrics.rate_figures([mine], "*"),
            {
                "spend": spend(reads.settings, {channel: mine}),
                "workers": sum(1 for w in reads.workers if w.channel == channel),
                "suppression_list": reads.suppressions.get(channel, 0) + reads.suppressions.get("*", 0),
                "dead_letters": state.dead_letters,
                "stalled_s": stalled,
                "deferred": deferred,
                **receipt_figures(groups),
            },
        )
        readings[channel] = alerts.Readings(
            backlog, figures["error_rate"], stalled, metrics.windowed([mine], "*|dead", 5)
        )
    return channels, readings


def _campaigns(reads: _Reads) -> dict[str, dict[str, Any]]:
    """Per campaign across channels; its in-flight leads (``sending``) are its pending ones."""
    everywhere = list(reads.counters.values())
    by_campaign: dict[str, list[DeliveryGroup]] = defaultdict(list)
    for group in reads.groups:
        by_campaign[group.campaign].append(group)
    campaigns: dict[str, dict[str, Any]] = {}
    for campaign in sorted(set(by_campaign) | metrics.names_of(everywhere, "c")):
        groups = by_campaign.get(campaign, [])
        campaigns[campaign] = _figures(
            status_figures(count_by_status(groups), 0),
            _oldest_claim(groups),
            metrics.rate_figures(everywhere, f"c:{campaign}"),
            {"spend": spend(reads.settings, reads.counters, campaign=campaign)},
        )
    return campaigns


def _providers(reads: _Reads, channels: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per provider: outcomes it gave; queued and pending leads of the channels it is configured for."""
    everywhere = list(reads.counters.values())
    primary = {channel: reads.settings.channel(channel).provider_names()[0] for channel in CHANNELS}
    names = {g.provider for g in reads.groups if g.provider} | metrics.names_of(everywhere, "p")
    names |= {primary[c] for c in CHANNELS if channels[c]["queued"] + channels[c]["pending"]}
    providers: dict[str, dict[str, Any]] = {}
    for provider in sorted(names):
        served = [c for c in CHANNELS if primary[c] == provider]
        counts = count_by_status([g for g in reads.groups if g.provider == provider])
        counts["queued"] = sum(channels[c]["queued"] for c in served)
        counts["sending"] = sum(channels[c]["pending"] for c in served)
        providers[provider] = _figures(
            status_figures(counts, 0),
            max((channels[c]["oldest_pending_s"] for c in served), default=0.0),
            metrics.rate_figures(everywhere, f"p:{provider}"),
            {"spend": spend(reads.settings, reads.counters, provider=provider)},
            receipt_figures([g for g in reads.groups if g.provider == provider]),
        )
    return providers


def collect(
    client: redis.Redis, conn: psycopg.Connection, settings: Settings, now: float | None = None
) -> Snapshot:
    """Read every figure (and record in Redis which alerts are active)."""
    now = time.time() if now is None else now
    namespace = settings.namespace
    reads = _Reads(
        settings,
        now,
        delivery_groups(conn, namespace),
        suppression_sizes(conn, namespace),
        queue_states(client, namespace, settings.redis.partitions),
        metrics.read_counters(client, namespace, CHANNELS, now),
        live_workers(client, namespace, now),
    )
    channels, readings = _channels(reads)
    series = {
        channel: metrics.per_minute([reads.counters[channel]], [f"*|{s}" for s in metrics.OUTCOMES])
        for channel in CHANNELS
    }
    return Snapshot(
        now,
        namespace,
        channels,
        _campaigns(reads),
        _providers(reads, channels),
        [dataclasses.asdict(w) for w in reads.workers],
        alerts.track(client, namespace, alerts.firing(readings, settings.alerts), now),
        cost_table(settings, reads.counters),
        series,
        reads.groups,
        reads.counters,
    )


class StatsSource:
    """Snapshots for long-running views (--watch, --serve), reconnecting after a Redis or PostgreSQL blip.

    Thread-safe: the Prometheus server's scrapes and the main loop share it.
    """

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._conn: psycopg.Connection | None = None

    def _connected(self) -> tuple[redis.Redis, psycopg.Connection]:
        if self._redis is None:
            self._redis = open_redis(self.endpoints.redis_url, self.settings)
        if self._conn is None or self._conn.closed:
            self._conn = open_postgres(self.endpoints.database_url, self.settings)
        return self._redis, self._conn

    def snapshot(self) -> Snapshot:
        """The figures now; DependencyError (and fresh connections next time) when a server is away."""
        with self._lock:
            try:
                client, conn = self._connected()
                return collect(client, conn, self.settings)
            except DependencyError:
                self._drop()
                raise
            except (redis.RedisError, OSError) as exc:
                self._drop()
                raise redis_unreachable(self.endpoints.redis_url, exc) from None
            except psycopg.Error as exc:
                self._drop()
                raise postgres_unreachable(self.endpoints.database_url, exc) from None

    def post_alerts(self, snapshot: Snapshot) -> list[str]:
        """Post alerts that started or ended to ``alerts.webhook_url`` (if set); return what was posted."""
        url = self.settings.alerts.webhook_url
        if not url:
            return []
        with self._lock:
            try:
                client, _ = self._connected()
                return alerts.Webhook(client, self.settings.namespace, url).update(snapshot.alerts)
            except (redis.RedisError, OSError) as exc:
                self._drop()
                raise redis_unreachable(self.endpoints.redis_url, exc) from None

    def _drop(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._conn is not None:
            self._conn.close()
        self._redis = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def post_alert_changes(settings: Settings, endpoints: Endpoints, say: Callable[[str], None]) -> None:
    """Post the alerts that started or ended (``alerts.webhook_url``), as `stats --watch` does, and
    ``say`` what was posted; a failure is said, not raised (the caller's own job went fine)."""
    if not settings.alerts.webhook_url:
        return
    source = StatsSource(settings, endpoints)
    try:
        for line in source.post_alerts(source.snapshot()):
            say(f"alert posted: {line}")
    except LeadctlError as exc:
        say(f"alerts not posted: {exc}")
    finally:
        source.close()
