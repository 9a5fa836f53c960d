"""Counters and latency histograms in Redis: written by workers and ingest, read by `leadctl stats` anywhere.

What a worker counted in the last second (a few batches of outcomes) becomes one Lua call over four
keys that share the channel's hash tag ``{namespace:channel}`` (so it is legal on Redis Cluster):

- ``:m:<slot>``: the counters of one 10-second slot, expiring after the 15-minute window. Rates,
  the error rate and latency percentiles are sums over the slots of a window.
- ``:m:total``: the same counters since the beginning (retried, attempts, latency for Prometheus),
  and ``last_send_ms``, when a worker last recorded outcomes.
- ``:m:sent:<YYYYMMDD>`` and ``:m:sent:<YYYYMM>`` (UTC): messages sent per ``provider|campaign``,
  which ``leadctl.ops.cost`` prices.

A counter's field is ``<dimension>|<stat>``. Dimensions: ``*`` the whole channel, ``c:<campaign>``,
``p:<provider>``, and ``x:<provider>|<campaign>`` (sends only, for projected spend). Stats: the
outcome statuses, ``queued`` (accepted by ingest), ``attempts`` (provider calls), ``retried``
(calls after the first), ``errors`` (calls that failed), ``lat:<bucket>`` and ``lat_us`` (call time).
A lead's calls are its outcome's ``extra_attempts`` + 1, as PostgreSQL's ``attempts`` counts them: a
try that open circuits refused made no call and counts in neither (leadctl.send.worker).

Statuses shown by `stats` come from PostgreSQL; these counters are for rates, latency and retries.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
import redis.asyncio as aioredis

from leadctl.connections import redis_outage
from leadctl.queue import keys

log = logging.getLogger("leadctl.send.metrics")

SLOT_S = 10
WINDOW_MINUTES = 15
WINDOW_SLOTS = WINDOW_MINUTES * 60 // SLOT_S
_SLOT_TTL_S = WINDOW_MINUTES * 60 + 4 * SLOT_S
_DAY_TTL_S = 2 * 86_400
_MONTH_TTL_S = 62 * 86_400
FLUSH_EVERY_S = 1.0
"""How often a worker publishes what it counted: one Redis call a second, whatever its send rate."""

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10_000, 15_000, 20_000, 30_000, 60_000,
)  # fmt: skip
"""Upper bounds of the latency buckets (ms), roughly log-spaced; one more bucket holds the rest."""

OUTCOMES: tuple[str, ...] = ("sent", "failed", "dead", "in_doubt")
"""Statuses a worker records for a lead it took from the queue."""

_RECORD = """
local n, m = tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, m do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if n > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if m > 0 then
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
if ARGV[1] ~= '' and tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[2], 'last_send_ms') or '0') then
  redis.call('HSET', KEYS[2], 'last_send_ms', ARGV[1])
end
return 1
"""


class OutcomeLike(Protocol):
    """What the recorder reads of an outcome (leadctl.store.deliveries.Outcome is one)."""

    @property
    def status(self) -> str: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def campaign(self) -> str | None: ...
    @property
    def extra_attempts(self) -> int: ...


def latency_bucket(ms: float) -> int:
    """Index of the bucket holding a call of ``ms`` milliseconds."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


def _dims(campaign: str | None, provider: str | None) -> list[str]:
    dims = ["*"]
    if campaign:
        dims.append(f"c:{campaign}")
    if provider:
        dims.append(f"p:{provider}")
    return dims


def _periods(now: float) -> tuple[str, str]:
    day = time.strftime("%Y%m%d", time.gmtime(now))
    return day, day[:6]


def _call(
    namespace: str, channel: str, counters: Counter[str], sent: Counter[str], now: float, mark_send: bool
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of one _RECORD call."""
    day, month = _periods(now)
    script_keys = [
        keys.metrics_slot(namespace, channel, int(now // SLOT_S)),
        keys.metrics_totals(namespace, channel),
        keys.metrics_spend(namespace, channel, day),
        keys.metrics_spend(namespace, channel, month),
    ]
    args: list[str | int] = [
        int(now * 1000) if mark_send else "",
        _SLOT_TTL_S,
        _DAY_TTL_S,
        _MONTH_TTL_S,
        len(counters),
        len(sent),
    ]
    for name, value in (*counters.items(), *sent.items()):
        args += (name, value)
    return script_keys, args


class MetricsRecorder:
    """Publishes one worker's counters: ``observe`` each provider call, ``record`` each batch of outcomes.

    What is counted is published at most every ``flush_every_s`` (and by ``flush`` when the worker
    ends) in one Redis call, so the cost does not grow with the number of flushes of outcomes.
    Publishing never raises: counters feed dashboards, and a Redis blip must not stop sending (the
    outage is logged once, its counts are dropped). ``enabled=False`` makes it a no-op
    (``worker.metrics: false``, used to measure what counters cost).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        channel: str,
        *,
        enabled: bool = True,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.namespace = namespace
        self.channel = channel
        self.enabled = enabled
        self.flush_every_s = flush_every_s
        self._script = client.register_script(_RECORD)
        self._kinds: Counter[tuple[str, str | None, str | None, int]] = Counter()
        self._latency: Counter[tuple[str, str, int]] = Counter()
        self._latency_us: Counter[tuple[str, str]] = Counter()
        self._flushed_at = time.monotonic()
        self._failing = False
        self._unpublished: tuple[Counter[str], Counter[str]] = (Counter(), Counter())

    def observe(self, provider: str, campaign: str | None, seconds: float) -> None:
        """Count one provider call's duration."""
        if self.enabled:
            self._latency[(provider, campaign or "", latency_bucket(seconds * 1000))] += 1
            self._latency_us[(provider, campaign or "")] += int(seconds * 1_000_000)

    async def record(self, outcomes: Iterable[OutcomeLike]) -> None:
        """Count a batch of outcomes; publish if ``flush_every_s`` has passed since the last time."""
        if not self.enabled:
            return
        self._kinds.update((o.status, o.campaign, o.provider, o.extra_attempts) for o in outcomes)
        if time.monotonic() - self._flushed_at >= self.flush_every_s:
            await self.flush()

    def drain(self) -> tuple[Counter[str], Counter[str]]:
        """The counters and the sends per ``provider|campaign`` counted so far, which start again from 0."""
        counters: Counter[str] = Counter()
        sent: Counter[str] = Counter()
        for (status, campaign, provider, extra), count in self._kinds.items():
            if status not in OUTCOMES:  # released back to the queue: not an outcome
                continue
            called = provider is not None
            for dim in _dims(campaign, provider):
                counters[f"{dim}|{status}"] += count
                if called:
                    counters[f"{dim}|attempts"] += (extra + 1) * count
                    counters[f"{dim}|errors"] += (extra + (status != "sent")) * count
                    if extra:
                        counters[f"{dim}|retried"] += extra * count
            if status == "sent" and called:
                sent[f"{provider}|{campaign or ''}"] += count
                counters[f"x:{provider}|{campaign or ''}|sent"] += count
        for (provider, campaign, bucket), count in self._latency.items():
            for dim in _dims(campaign, provider):
                counters[f"{dim}|lat:{bucket}"] += count
        for (provider, campaign), micros in self._latency_us.items():
            for dim in _dims(campaign, provider):
                counters[f"{dim}|lat_us"] += micros
        self._kinds.clear()
        self._latency.clear()
        self._latency_us.clear()
        return counters, sent

    async def flush(self, now: float | None = None) -> None:
        """Publish everything counted since the last flush, in one Redis call."""
        self._flushed_at = time.monotonic()
        counters, sent = self.drain()
        unpublished_counters, unpublished_sent = self._unpublished
        counters.update(unpublished_counters)
        sent.update(unpublished_sent)
        self._unpublished = (Counter(), Counter())
        if not counters:
            return
        script_keys, args = _call(
            self.namespace, self.channel, counters, sent, time.time() if now is None else now, True
        )
        try:
            await self._script(keys=script_keys, args=args)
        except Exception as exc:
            if not (isinstance(exc, redis.RedisError) or redis_outage(exc)):
                raise
            if not self._failing:
                log.warning("counters for stats not published (sending goes on): %s", exc)
            self._failing = True
            self._unpublished = (counters, sent)  # published with the next flush: nothing is lost
            return
        self._failing = False


def record_ingest(
    client: redis.Redis, namespace: str, channel: str, queued: int, suppressed: int, now: float | None = None
) -> None:
    """Publish what one ingest batch accepted on a channel: leads queued, and suppressed at ingest."""
    counters = Counter({"*|queued": queued, "*|suppressed": suppressed})
    counters = +counters  # drop zeros
    if counters:
        script_keys, args = _call(
            namespace, channel, counters, Counter(), time.time() if now is None else now, False
        )
        client.register_script(_RECORD)(keys=script_keys, args=args)


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelCounters:
    """A channel's counters read at one instant: window slots (newest first), totals, sends by period."""

    slots: list[dict[str, int]]
    totals: dict[str, int]
    day: dict[str, int]
    month: dict[str, int]

    @property
    def last_send(self) -> float | None:
        """When a worker last recorded outcomes (epoch seconds), if ever."""
        ms = self.totals.get("last_send_ms")
        return ms / 1000 if ms else None


def _decode(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def read_counters(
    client: redis.Redis, namespace: str, channels: Sequence[str], now: float
) -> dict[str, ChannelCounters]:
    """Every channel's counters in one pipeline."""
    current = int(now // SLOT_S)
    day, month = _periods(now)
    pipe = client.pipeline(transaction=False)
    for channel in channels:
        pipe.hgetall(keys.metrics_totals(namespace, channel))
        pipe.hgetall(keys.metrics_spend(namespace, channel, day))
        pipe.hgetall(keys.metrics_spend(namespace, channel, month))
        for offset in range(WINDOW_SLOTS):
            pipe.hgetall(keys.metrics_slot(namespace, channel, current - offset))
    replies = [_decode(raw) for raw in pipe.execute()]
    per_channel = 3 + WINDOW_SLOTS
    result: dict[str, ChannelCounters] = {}
    for index, channel in enumerate(channels):
        totals, day_sent, month_sent, *slots = replies[index * per_channel : (index + 1) * per_channel]
        result[channel] = ChannelCounters(slots, totals, day_sent, month_sent)
    return result


def windowed(counters: Iterable[ChannelCounters], name: str, minutes: int) -> int:
    """Sum of a counter over the last ``minutes`` (the current slot and the ones before it)."""
    span = minutes * 60 // SLOT_S
    return sum(slot.get(name, 0) for c in counters for slot in c.slots[:span])


def per_minute(counters: Sequence[ChannelCounters], names: Sequence[str]) -> list[int]:
    """The counters summed per minute over the window, oldest minute first."""
    per_slot = 60 // SLOT_S
    series = []
    for minute in range(WINDOW_MINUTES - 1, -1, -1):
        series.append(
            sum(
                slot.get(name, 0)
                for c in counters
                for slot in c.slots[minute * per_slot : (minute + 1) * per_slot]
                for name in names
            )
        )
    return series


def total(counters: Iterable[ChannelCounters], name: str) -> int:
    return sum(c.totals.get(name, 0) for c in counters)


def names_of(counters: Iterable[ChannelCounters], kind: str) -> set[str]:
    """Campaigns (``c``) or providers (``p``) that have counters."""
    prefix = f"{kind}:"
    found: set[str] = set()
    for c in counters:
        for source in (c.totals, *c.slots):
            for name in source:
                if name.startswith(prefix):
                    found.add(name[len(prefix) :].rpartition("|")[0])
    return found


def latency_buckets(source: Iterable[dict[str, int]], dim: str) -> list[int]:
    """Calls per latency bucket (the last one is beyond every bound) in some counter hashes."""
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    prefix = f"{dim}|lat:"
    for counters in source:
        for name, value in counters.items():
            if name.startswith(prefix):
                buckets[int(name[len(prefix) :])] += value
    return buckets


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (ms) of a bucketed distribution, interpolated linearly inside its bucket."""
    count = sum(buckets)
    if not count:
        return None
    rank = q * count
    seen = 0
    for index, in_bucket in enumerate(buckets):
        if in_bucket and seen + in_bucket >= rank:
            if index == len(LATENCY_BOUNDS_MS):  # beyond the last bound: all we know is its floor
                return LATENCY_BOUNDS_MS[-1]
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / in_bucket
        seen += in_bucket
    return LATENCY_BOUNDS_MS[-1]


def rate_figures(counters: Sequence[ChannelCounters], dim: str) -> dict[str, float | int | None]:
    """Retries, throughput, error rate and latency of one dimension, summed over ``counters``."""

    def leads(minutes: int) -> int:
        return sum(windowed(counters, f"{dim}|{status}", minutes) for status in OUTCOMES)

    attempts = windowed(counters, f"{dim}|attempts", 5)
    errors = windowed(counters, f"{dim}|errors", 5)
    window = [slot for c in counters for slot in c.slots[: 5 * 60 // SLOT_S]]
    buckets = latency_buckets(window, dim)

    def ms(q: float) -> float | None:
        value = quantile(buckets, q)
        return None if value is None else round(value, 1)

    return {
        "retried": total(counters, f"{dim}|retried"),
        "sent_last_minute": windowed(counters, f"{dim}|sent", 1),
        "leads_per_min_1m": leads(1),
        "leads_per_min_5m": round(leads(5) / 5, 1),
        "leads_per_min_15m": round(leads(15) / 15, 1),
        "error_rate": round(errors / attempts, 4) if attempts else 0.0,
        "latency_p50_ms": ms(0.50),
        "latency_p95_ms": ms(0.95),
        "latency_p99_ms": ms(0.99),
    }
