"""`leadctl batch`: the cron job that drains the queues within a time budget, one run at a time.

This is what "batch" means in leadctl: the scheduled run. Its budget is ``batch.max_seconds``
(``--max-seconds``); it drains every busy channel in parallel with ``channels.<ch>.workers`` worker
processes each (``--workers``), which read and send as ``leadctl work`` does (``worker.*``).

A run takes a lease in Redis (SET NX PX, renewed while it works, released at the end), so two
overlapping runs never process together: the second finds the lock taken and exits at once.

With ``--campaign`` a run sends only those campaigns' leads (leadctl.queue.sifting): the others stay
queued where they are, and ``remaining`` counts the selected campaigns' queued leads (PostgreSQL).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres, open_redis
from leadctl.errors import DependencyError
from leadctl.queue import deferred, keys, streams
from leadctl.queue.sifting import CampaignFilter, campaign_filter
from leadctl.send.supervisor import PoolReport, PoolSpec, Supervisor, check_dependencies
from leadctl.store.reports import CampaignCounts, campaign_counts

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class BatchLock:
    """A lease on the namespace's batch lock; ``renew`` is cheap to call often (it throttles itself)."""

    def __init__(self, client: redis.Redis, namespace: str, lease_s: float = 60.0) -> None:
        self.client = client
        self.key = keys.batch_lock(namespace)
        self.token = uuid.uuid4().hex
        self.lease_ms = int(lease_s * 1000)
        self._renewed = 0.0

    def acquire(self) -> bool:
        taken = bool(self.client.set(self.key, self.token, nx=True, px=self.lease_ms))
        self._renewed = time.monotonic()
        return taken

    def renew(self) -> None:
        if time.monotonic() - self._renewed >= self.lease_ms / 3000:
            self.client.eval(_RENEW, 1, self.key, self.token, self.lease_ms)
            self._renewed = time.monotonic()

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


@dataclass(slots=True)
class ChannelSummary:
    """One channel's part of a batch run."""

    sent: int = 0
    failed: int = 0
    in_doubt: int = 0
    dead: int = 0
    deferred: int = 0
    """Leads put off by quiet hours or a frequency cap (they wait in the delayed set, not failed)."""
    remaining: int = 0
    leads_per_min: float = 0.0


@dataclass(slots=True)
class BatchReport:
    """What a batch run did; ``skipped`` when another run held the lock; ``campaigns``: the ones
    selected (None: all), ``unknown_campaigns``: those of them without a single lead."""

    skipped: bool = False
    seconds: float = 0.0
    channels: dict[str, ChannelSummary] = field(default_factory=dict)
    fatal: str | None = None
    campaigns: list[str] | None = None
    unknown_campaigns: list[str] = field(default_factory=list)

    @property
    def unsent(self) -> int:
        return sum(c.failed + c.in_doubt + c.dead for c in self.channels.values())

    def as_json(self) -> dict[str, object]:
        return {
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "campaigns": self.campaigns,
            "unknown_campaigns": self.unknown_campaigns,
            "channels": {
                name: {
                    **{k: getattr(c, k) for k in ChannelSummary.__slots__},
                    "leads_per_min": round(c.leads_per_min),
                }
                for name, c in self.channels.items()
            },
        }


@dataclass(slots=True)
class BatchOptions:
    """channels: the channels to drain; limit: leads at most (split over the channels);
    max_seconds: the time budget; workers: processes per channel (default: the channel's config);
    campaigns: send only these campaigns' leads (None: every campaign)."""

    channels: list[str]
    limit: int | None = None
    max_seconds: float | None = None
    workers: int | None = None
    name: str | None = None
    campaigns: frozenset[str] | None = None


def parse_every(text: str) -> float:
    """'15m' -> 900.0; accepts s, m and h."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--every takes a duration like 15m, 900s or 1h, not {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def split(total: int | None, parts: int) -> list[int | None]:
    """Split ``total`` into ``parts`` shares differing by at most one (None: no limit)."""
    if total is None:
        return [None] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _summarise(report: PoolReport, remaining: int) -> ChannelSummary:
    statuses = report.statuses
    done = statuses.get("sent", 0) + report.unsent
    return ChannelSummary(
        sent=statuses.get("sent", 0),
        failed=statuses.get("failed", 0),
        in_doubt=statuses.get("in_doubt", 0),
        dead=statuses.get("dead", 0),
        deferred=statuses.get("deferred", 0),
        remaining=remaining,
        leads_per_min=done / report.seconds * 60 if report.seconds else 0.0,
    )


def run_batch(
    settings: Settings,
    endpoints: Endpoints,
    client: redis.Redis,
    options: BatchOptions,
    say: Callable[[str], None],
) -> BatchReport:
    """One batch run: take the lock, drain the channels in parallel within the budget, release."""
    lock = BatchLock(client, settings.namespace)
    if not lock.acquire():
        say("another leadctl batch is running in this namespace; nothing to do")
        return BatchReport(skipped=True)
    started = time.monotonic()
    try:
        selected = _selected(settings, endpoints, options.campaigns)
        busy = [ch for ch in options.channels if _busy(client, settings, ch, selected)]
        pools = [
            PoolSpec(
                ch,
                options.workers or settings.channel(ch).workers,
                settings.channel(ch).concurrency,
                share,
                _filter(client, settings, ch, options.campaigns),
            )
            for ch, share in zip(busy, split(options.limit, len(busy)), strict=True)
        ]
        budget = options.max_seconds if options.max_seconds is not None else settings.batch.max_seconds
        reports = (
            Supervisor(
                settings, endpoints, pools, burst=True, deadline_s=budget, name=options.name, tick=lock.renew
            ).run()
            if pools
            else {}
        )
    finally:
        lock.release()
    result = BatchReport(seconds=time.monotonic() - started)
    selected = _selected(settings, endpoints, options.campaigns)
    if options.campaigns is not None and selected is not None:
        result.campaigns = sorted(options.campaigns)
        result.unknown_campaigns = sorted(options.campaigns - selected.known)
    for channel in options.channels:
        remaining = (
            selected.by_channel.get(channel, Counter())["queued"]
            if selected is not None
            else sum(_depth(client, settings, channel))
        )
        report = reports.get(channel)
        result.channels[channel] = (
            _summarise(report, remaining) if report else ChannelSummary(remaining=remaining)
        )
        if report and report.fatal:
            result.fatal = f"{channel}: {report.fatal}"
    return result


def _selected(
    settings: Settings, endpoints: Endpoints, campaigns: frozenset[str] | None
) -> CampaignCounts | None:
    """The selected campaigns' leads per channel and status, now (None: no campaign selected)."""
    if campaigns is None:
        return None
    with open_postgres(endpoints.database_url, settings) as conn:
        return campaign_counts(conn, settings.namespace, campaigns)


def _busy(client: redis.Redis, settings: Settings, channel: str, selected: CampaignCounts | None) -> bool:
    """Whether the channel has work for this run: entries or due deferred leads, or with campaigns
    selected, leads of theirs queued or being sent (a crashed worker's, to reclaim)."""
    if selected is not None:
        statuses = selected.by_channel.get(channel, Counter())
        return statuses["queued"] + statuses["sending"] > 0
    return sum(_depth(client, settings, channel)) > 0 or bool(
        deferred.due(client, settings.namespace, channel, settings.redis.partitions, time.time())
    )


def _filter(
    client: redis.Redis, settings: Settings, channel: str, campaigns: frozenset[str] | None
) -> CampaignFilter | None:
    if campaigns is None:
        return None
    return campaign_filter(client, settings.namespace, channel, settings.redis.partitions, campaigns)


def _depth(client: redis.Redis, settings: Settings, channel: str) -> tuple[int, int]:
    depth = streams.depth(client, settings.namespace, channel, settings.redis.partitions)
    return depth.queued, depth.pending


def run_batches(
    settings: Settings,
    endpoints: Endpoints,
    options: BatchOptions,
    say: Callable[[str], None],
    on_report: Callable[[BatchReport], None],
    every_s: float | None = None,
) -> BatchReport:
    """`leadctl batch`: check the dependencies, then one run, given to ``on_report``, and returned;
    with ``every_s``, a run every that many seconds, until interrupted. A DependencyError when a
    run found a dependency down."""
    check_dependencies(settings, endpoints, options.channels)
    client = open_redis(endpoints.redis_url, settings)
    try:
        while True:
            started = time.monotonic()
            report = run_batch(settings, endpoints, client, options, say)
            if report.fatal:
                raise DependencyError(report.fatal)
            on_report(report)
            if every_s is None:
                return report
            time.sleep(max(0.0, every_s - (time.monotonic() - started)))
    finally:
        client.close()
