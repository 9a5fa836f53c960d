"""Send rates shared by every worker on every host: GCRA in one Lua script, and a shared pause.

``providers.<name>.rate_limit`` (messages per second) and ``rate_limit_per_sender`` are enforced in
Redis with the generic cell rate algorithm: each limit is one key holding its theoretical arrival
time (TAT). A reservation of n sends is scheduled at the earliest instant every limit allows and moves
each TAT on by n intervals, so any window of W seconds holds at most ``rate * W + burst`` sends,
whichever processes and hosts make them. Time is Redis's clock (``TIME``), so hosts need not agree on
theirs. The script never refuses: it answers "n granted, start in w microseconds" and the caller
sleeps w, so a reservation is one round trip and there is no retry storm when the limit is reached.

Within a worker process, concurrent ``acquire()`` calls are coalesced: one reservation covers every
waiting send task (up to ``burst``), so at thousands of messages per second a process makes one round
trip per batch rather than per send, and never holds tokens nobody is waiting for. A token its task
resumes to late (a stalled loop or host) is dropped rather than sent out of turn (LATE_S).

A provider's 429 calls ``pause(retry_after)``, which sets a key with that TTL; the script answers
"paused for w" while it exists, so every worker waits it out. Sends whose reservation was granted
before the pause began in another process still go (at most one batch per process). A provider with
no configured rate gets no limiter: a ``PauseGate`` that only reads the pause key, at most every
100 ms per process.

All keys of a provider share the hash tag ``{namespace:rl:provider}`` (leadctl.queue.keys), so the script
is legal on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis

from leadctl.config import ProviderSettings
from leadctl.connections import redis_outage
from leadctl.queue import keys
from leadctl.retry import OUTAGE, Backoff

log = logging.getLogger("leadctl.providers.ratelimit")

# KEYS[1] the pause key, KEYS[2..] one GCRA key per limit; ARGV[1] sends wanted, then per limit its
# emission interval (microseconds) and burst. Returns {sends granted, microseconds to wait}; while
# paused {0, remaining pause}. At most the smallest burst is granted at once.
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then
  return {0, paused * 1000}
end
local n = tonumber(ARGV[1])
for i = 2, #KEYS do
  n = math.min(n, tonumber(ARGV[2 * i - 1]))
end
local start = now
local tats = {}
for i = 2, #KEYS do
  local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now)
  tats[i] = tat
  start = math.max(start, tat + (n - tonumber(ARGV[2 * i - 1])) * tonumber(ARGV[2 * i - 2]))
end
for i = 2, #KEYS do
  local tat = math.ceil(math.max(tats[i], start) + n * tonumber(ARGV[2 * i - 2]))
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return {n, math.ceil(start - now)}
"""

# KEYS[1] the pause key, ARGV[1] milliseconds; a longer pause already set is kept.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
"""

PAUSE_REFRESH_S = 0.1
"""How stale a PauseGate's view of the pause key may be."""

LATE_S = 0.025
"""A send task that resumes more than this long after its token was due (its loop or host stalled)
does not use the token: sent late, it would crowd the sends other processes reserved after it. It
reserves again, once; the second token is used however late, so a process whose loop always lags
still sends. Dropping tokens wastes them but keeps sends within ``LATE_S`` of their due times."""


def default_burst(rate: float) -> int:
    """A twentieth of a second's worth (at least 1): a one-second window holds at most 105% of the rate."""
    return max(1, int(rate / 20))


@dataclass(frozen=True, slots=True)
class Grant:
    """A reservation: ``count`` sends may start in ``wait`` seconds (count 0: the provider is paused)."""

    count: int
    wait: float


class _Pausable:
    """The provider's shared pause, and this process's view of it."""

    def __init__(self, client: aioredis.Redis, namespace: str, provider: str) -> None:
        self.provider = provider
        self._client = client
        self._pause_key = keys.provider_pause(namespace, provider)
        self._set_pause = client.register_script(_PAUSE)
        self._paused_until = 0.0  # time.monotonic()

    def paused_for(self) -> float:
        """Seconds this process knows the provider stays paused (0: not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    def _note_pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def pause(self, seconds: float) -> None:
        """Pause the provider for every worker (a 429's Retry-After); a longer pause already set stays."""
        if seconds <= 0:
            return
        self._note_pause(seconds)
        log.info("provider %s: paused %.1f s (rate limited)", self.provider, seconds)
        try:
            await self._set_pause(keys=[self._pause_key], args=[math.ceil(seconds * 1000)])
        except Exception as exc:
            if not redis_outage(exc):
                raise
            log.warning("provider %s: pause kept in this process only (Redis: %s)", self.provider, exc)


class PauseGate(_Pausable):
    """No rate limit, but the shared pause is honoured: at most one Redis read per ``PAUSE_REFRESH_S``."""

    def __init__(self, client: aioredis.Redis, namespace: str, provider: str) -> None:
        super().__init__(client, namespace, provider)
        self._checked_at = -math.inf
        self._checking = False

    async def acquire(self, n: int = 1, sender: str | None = None) -> None:
        """Return at once unless the provider is paused; then wait the pause out."""
        now = time.monotonic()
        if not self._checking and now - self._checked_at >= PAUSE_REFRESH_S:
            self._checking = True
            try:
                remaining_ms = await self._client.pttl(self._pause_key)
                if remaining_ms > 0:
                    self._note_pause(remaining_ms / 1000)
            except Exception as exc:
                if not redis_outage(exc):
                    raise
                # keep the view we have; the send itself will meet the outage
            finally:
                self._checked_at, self._checking = now, False
        while (wait := self.paused_for()) > 0:
            await asyncio.sleep(wait)


class RateLimiter(_Pausable):
    """A provider's rate limit shared through Redis, as one worker process uses it.

    rate: messages per second for the whole provider (None: only the per-sender limit).
    per_sender: messages per second for each of its senders (None: no such limit).
    burst: sends allowed back to back under each limit (default ``default_burst`` of that limit);
        it is also the largest reservation one round trip makes.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        provider: str,
        *,
        rate: float | None = None,
        per_sender: float | None = None,
        burst: int | None = None,
    ) -> None:
        if rate is None and per_sender is None:
            raise ValueError("a RateLimiter needs rate or per_sender")
        super().__init__(client, namespace, provider)
        self._namespace = namespace
        self._provider_limit = _limit(rate, burst) if rate is not None else None
        self._sender_limit = _limit(per_sender, burst) if per_sender is not None else None
        bursts = [limit[1] for limit in (self._provider_limit, self._sender_limit) if limit is not None]
        self.max_batch = min(bursts)
        self._reserve = client.register_script(_RESERVE)
        self.reservations = 0  # round trips made, for benchmarks and metrics
        self.discarded = 0  # tokens resumed to too late to use (see LATE_S)
        self._batchers: dict[str | None, _Batcher] = {}

    async def reserve(self, n: int = 1, sender: str | None = None) -> Grant:
        """One round trip: reserve up to ``n`` sends (at most ``max_batch``) at the earliest allowed time."""
        script_keys = [self._pause_key]
        args: list[float] = [n]
        if self._provider_limit is not None:
            script_keys.append(keys.rate_limit(self._namespace, self.provider))
            args += self._provider_limit
        if self._sender_limit is not None:
            script_keys.append(keys.rate_limit(self._namespace, self.provider, sender or "default"))
            args += self._sender_limit
        count, wait_us = await self._reserve(keys=script_keys, args=args)
        self.reservations += 1
        grant = Grant(int(count), int(wait_us) / 1_000_000)
        if grant.count == 0:
            self._note_pause(grant.wait)
        return grant

    async def acquire(self, n: int = 1, sender: str | None = None) -> None:
        """Wait until ``n`` sends may start; concurrent callers in this process share reservations.

        Redis being unreachable holds the caller (retrying with backoff) rather than sending unchecked.
        """
        key = sender if self._sender_limit is not None else None
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = _Batcher(self, key)
        while n > 0:
            part = min(n, self.max_batch)
            await batcher.take(part)
            n -= part


def _limit(rate: float, burst: int | None) -> tuple[float, int]:
    """(emission interval in microseconds, burst) as the script takes them."""
    return 1_000_000 / rate, burst or default_burst(rate)


class _Batcher:
    """Queues one process's waiting sends for one limit key and reserves for them in batches."""

    def __init__(self, limiter: RateLimiter, sender: str | None) -> None:
        self._limiter = limiter
        self._sender = sender
        self._waiting: deque[tuple[int, asyncio.Future[float]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(OUTAGE, on_failure=self._holding)  # while Redis is away

    async def take(self, n: int) -> None:
        """Wait for ``n`` tokens; if resumed too late to use them, reserve again once (LATE_S)."""
        for retry in (False, True):
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._waiting.append((n, future))
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
            due = await future
            if retry or time.monotonic() - due <= LATE_S:
                return
            self._limiter.discarded += n

    def _next_batch(self) -> tuple[list[tuple[int, asyncio.Future[float]]], int]:
        batch: list[tuple[int, asyncio.Future[float]]] = []
        count = 0
        while self._waiting and count + self._waiting[0][0] <= self._limiter.max_batch:
            n, future = self._waiting.popleft()
            if not future.done():  # its caller was cancelled
                batch.append((n, future))
                count += n
        return batch, count

    def _holding(self, exc: BaseException, _pause: float) -> None:
        if self._backoff.failed == 1:
            log.warning(
                "provider %s: rate limiter cannot reach Redis (%s); holding sends",
                self._limiter.provider,
                exc,
            )

    async def _run(self) -> None:
        while self._waiting:
            batch, count = self._next_batch()
            if not batch:
                continue
            try:
                grant = await self._limiter.reserve(count, self._sender)
                due = time.monotonic() + grant.wait
            except Exception as exc:
                if not self._backoff.retries(exc):
                    for _, future in [*batch, *self._waiting]:
                        if not future.done():
                            future.set_exception(exc)
                    self._waiting.clear()
                    return
                self._waiting.extendleft(reversed(batch))
                await self._backoff.wait(exc)
                continue
            self._backoff.reset()
            if grant.count < count:  # paused: nothing was reserved
                self._waiting.extendleft(reversed(batch))
                await asyncio.sleep(grant.wait)
                continue
            await asyncio.sleep(grant.wait)
            if self._limiter.paused_for() > 0:  # this process met a 429 meanwhile
                self._waiting.extendleft(reversed(batch))
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(due)


Throttle = RateLimiter | PauseGate


def sender_of(settings: ProviderSettings) -> str | None:
    """The sender a per-sender limit counts against: ``from``, else the messaging service or phone id."""
    return settings.from_ or settings.extra("messaging_service_sid") or settings.extra("phone_number_id")


def throttle_for(client: aioredis.Redis, namespace: str, name: str, settings: ProviderSettings) -> Throttle:
    """The provider's RateLimiter, or a PauseGate when it has no rate limit."""
    if settings.rate_limit is None and settings.rate_limit_per_sender is None:
        return PauseGate(client, namespace, name)
    return RateLimiter(
        client,
        namespace,
        name,
        rate=settings.rate_limit,
        per_sender=settings.rate_limit_per_sender,
        burst=settings.burst,
    )
