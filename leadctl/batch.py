"""`leadctl batch`: the cron job that drains the queues within a time budget, one run at a time.

A run takes a lease in Redis (SET NX PX, renewed while it works, released at the end), so two
overlapping runs never process together: the second finds the lock taken and exits at once.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from leadctl import keys, queue
from leadctl.compliance import delayed
from leadctl.config import Settings
from leadctl.connections import Endpoints
from leadctl.pool import PoolReport, PoolSpec, Supervisor

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
    """What a batch run did; ``skipped`` when another run held the lock."""

    skipped: bool = False
    seconds: float = 0.0
    channels: dict[str, ChannelSummary] = field(default_factory=dict)
    fatal: str | None = None

    @property
    def unsent(self) -> int:
        return sum(c.failed + c.in_doubt + c.dead for c in self.channels.values())

    def as_json(self) -> dict[str, object]:
        return {
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
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
    max_seconds: the time budget; workers: processes per channel (default: the channel's config)."""

    channels: list[str]
    limit: int | None = None
    max_seconds: float | None = None
    workers: int | None = None
    name: str | None = None


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
        busy = [
            ch
            for ch in options.channels
            if sum(_depth(client, settings, ch)) > 0
            or delayed.due(client, settings.namespace, ch, settings.redis.partitions, time.time())
        ]
        pools = [
            PoolSpec(
                ch, options.workers or settings.channel(ch).workers, settings.channel(ch).concurrency, share
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
    for channel in options.channels:
        remaining = sum(_depth(client, settings, channel))
        report = reports.get(channel)
        result.channels[channel] = (
            _summarise(report, remaining) if report else ChannelSummary(remaining=remaining)
        )
        if report and report.fatal:
            result.fatal = f"{channel}: {report.fatal}"
    return result


def _depth(client: redis.Redis, settings: Settings, channel: str) -> tuple[int, int]:
    depth = queue.depth(client, settings.namespace, channel, settings.redis.partitions)
    return depth.queued, depth.pending
