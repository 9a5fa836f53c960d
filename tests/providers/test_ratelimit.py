"""The shared rate limit over real Redis: the GCRA script, batched reservations, the pause, many processes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from leadctl.bench.ratelimit import passed, run, worst_window
from leadctl.config import ProviderSettings, Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.providers.ratelimit import (
    PAUSE_REFRESH_S,
    Grant,
    PauseGate,
    RateLimiter,
    default_burst,
    throttle_for,
)
from leadctl.queue import keys
from tests.support.cli import run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.waiting import wait_until

PROVIDER = "twilio"
EPS = 0.002
"""Rounding: the script schedules in whole microseconds up, and PTTL answers whole milliseconds."""


class Recorded(RateLimiter):
    """A RateLimiter that keeps each grant Redis gave it, with its sender and when the answer came.

    The grants are the limiter's own decisions, taken on Redis's clock: a loaded machine only delays
    carrying them out, so they bound how long the limiter holds sends however slow the run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants: list[tuple[str | None, Grant]] = []
        self.replied: list[float] = []

    async def reserve(self, n: int = 1, sender: str | None = None) -> Grant:
        grant = await super().reserve(n, sender)
        self.grants.append((sender, grant))
        self.replied.append(time.monotonic())
        return grant


def in_loop(redis_url: str, test: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    """Run ``test(client)`` in a fresh event loop with its own asyncio Redis client."""

    async def go() -> Any:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await test(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture
def redis_url(service_urls: tuple[str, str]) -> str:
    return service_urls[0]


def test_a_providers_keys_share_one_cluster_slot(namespace: str) -> None:
    names = [
        keys.rate_limit(namespace, PROVIDER),
        keys.rate_limit(namespace, PROVIDER, "+15005550006"),
        keys.provider_pause(namespace, PROVIDER),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert all(name.startswith(f"{{{namespace}:rl:{PROVIDER}}}") for name in names)
    assert key_slot(keys.rate_limit(namespace, "zenvia").encode()) != key_slot(names[0].encode())


def test_burst_goes_at_once_then_one_interval_each(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> list[tuple[Grant, float]]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=10, burst=5)
        began = time.monotonic()
        return [(await limiter.reserve(n), time.monotonic() - began) for n in (5, 1, 2)]

    (burst, _), (one, one_at), (two, two_at) = in_loop(redis_url, test)
    assert burst == Grant(5, 0.0)
    # each start is fixed by the burst's reservation: a reservation asked for later waits that much less
    assert one.count == 1 and 0.1 - one_at - EPS <= one.wait <= 0.1 + EPS
    # two more go together once the second of them is due, 0.3 s after the burst
    assert two.count == 2 and 0.3 - two_at - EPS <= two.wait <= 0.3 + EPS


def test_a_reservation_is_capped_at_the_burst_and_keys_expire(
    namespace: str, redis_url: str, redis_client: Any
) -> None:
    async def test(client: aioredis.Redis) -> Grant:
        return await RateLimiter(client, namespace, PROVIDER, rate=100, burst=5).reserve(50)

    assert in_loop(redis_url, test).count == 5
    ttl = redis_client.pttl(keys.rate_limit(namespace, PROVIDER))
    assert 0 < ttl <= 1100


def test_concurrent_acquires_keep_the_steady_rate(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, list[float], Recorded]:
        limiter = Recorded(client, namespace, PROVIDER, rate=100, burst=1)
        granted: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            granted.append(time.monotonic())

        began = time.monotonic()
        await asyncio.gather(*(one() for _ in range(41)))
        return began, sorted(granted), limiter

    began, granted, limiter = in_loop(redis_url, test)
    # burst 1: the k-th send never starts before k intervals (it may start late, never early)
    assert all(t - began >= k * 0.01 - 0.003 for k, t in enumerate(granted))
    # one reservation per send (and per token its task resumed to too late), each due one interval
    # after the one before: the limiter never holds a send longer than the rate requires
    assert limiter.reservations == 41 + limiter.discarded
    assert max(grant.wait for _, grant in limiter.grants) <= 0.01 + EPS


def test_a_busy_process_reserves_in_batches(namespace: str, redis_url: str) -> None:
    """2,000 sends at 2,000/s from 200 tasks: about one round trip per burst (100), not per send."""

    async def test(client: aioredis.Redis) -> tuple[float, Recorded]:
        limiter = Recorded(client, namespace, PROVIDER, rate=2000)
        began = time.monotonic()

        async def ten() -> None:
            for _ in range(10):
                await limiter.acquire()

        await asyncio.gather(*(ten() for _ in range(200)))
        return time.monotonic() - began, limiter

    elapsed, limiter = in_loop(redis_url, test)
    assert elapsed >= 0.94  # the first burst (100) at once, then 1,900 at 2,000/s: never faster
    # the waits the limiter prescribed add up to no more than its tokens take at 2,000/s
    reserved = 2000 + limiter.discarded
    assert sum(grant.wait for _, grant in limiter.grants) <= reserved / 2000 + EPS
    assert limiter.reservations <= 25 + math.ceil(limiter.discarded / 100)


def test_acquire_n_larger_than_the_burst_takes_several_reservations(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, Recorded]:
        limiter = Recorded(client, namespace, PROVIDER, rate=100, burst=10)
        began = time.monotonic()
        await limiter.acquire(30)
        return time.monotonic() - began, limiter

    elapsed, limiter = in_loop(redis_url, test)
    assert limiter.reservations == 3 + limiter.discarded // 10  # a late take reserves its 10 again
    assert elapsed >= 0.2 - 0.003  # the third 10 start two bursts (0.2 s) after the first
    assert sum(grant.wait for _, grant in limiter.grants) <= (20 + limiter.discarded) * 0.01 + EPS


def test_each_sender_has_its_own_limit_under_the_providers(namespace: str, redis_url: str) -> None:
    senders = ("+15005550006", "+15005550007")

    async def test(client: aioredis.Redis) -> tuple[float, Recorded, float, Recorded]:
        limiter = Recorded(client, namespace, PROVIDER, per_sender=10, burst=1)

        async def five(sender: str) -> None:
            for _ in range(5):
                await limiter.acquire(sender=sender)

        began = time.monotonic()
        await asyncio.gather(*(five(sender) for sender in senders))
        two_senders = time.monotonic() - began

        capped = Recorded(client, namespace, "capped", rate=10, per_sender=1000, burst=1)
        began = time.monotonic()
        await asyncio.gather(*(capped.acquire(sender=s) for s in ("a", "b", "c", "d", "e", "a", "b")))
        return two_senders, limiter, time.monotonic() - began, capped

    two_senders, limiter, capped_s, capped = in_loop(redis_url, test)
    # never faster than the limits allow
    assert two_senders >= 0.35  # each sender's 5 sends at 10/s
    assert capped_s >= 0.55  # 7 sends at the provider's 10/s
    # the two senders' 10/s limits run in parallel: each sender is held 4 intervals (0.4 s) in all,
    # not the 0.8 s one shared sender limit would hold it; a loaded machine only delays, never adds to it
    for sender in senders:
        held = sum(grant.wait for s, grant in limiter.grants if s == sender)
        assert held <= (4 + limiter.discarded) * 0.1 + EPS, (sender, limiter.grants)
    # the provider's 10/s binds, whatever the senders' limits: no send is held past the 7th slot
    assert max(grant.wait for _, grant in capped.grants) <= (6 + capped.discarded) * 0.1 + EPS


def test_a_pause_holds_every_process_and_is_never_shortened(
    namespace: str, redis_url: str, redis_client: Any
) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, float, float, Recorded]:
        other = aioredis.Redis.from_url(redis_url)  # another worker process's connection
        try:
            here = RateLimiter(client, namespace, PROVIDER, rate=1000)
            there = Recorded(other, namespace, PROVIDER, rate=1000)
            paused_at = time.monotonic()
            await here.pause(0.4)
            await here.pause(0.1)  # a shorter Retry-After does not cut the pause short
            began = time.monotonic()
            await there.acquire()
            return paused_at, began, time.monotonic(), there
        finally:
            await other.aclose()

    paused_at, began, ended, there = in_loop(redis_url, test)
    (_, first), *_ = there.grants
    assert first.count == 0  # paused: nothing reserved
    # what was left of the 0.4 s pause when the other process asked (not what the 0.1 s one would leave)
    assert first.wait >= 0.4 - (there.replied[0] - paused_at) - EPS
    assert ended - began >= first.wait - EPS  # the send was held for all of it
    assert sum(grant.wait for _, grant in there.grants) <= 0.4 + EPS  # and no longer than the pause
    assert redis_client.exists(keys.provider_pause(namespace, PROVIDER)) == 0


def test_a_pause_in_this_process_holds_sends_already_reserved(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> list[float]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=2, burst=1)
        await limiter.acquire()  # the next one is reserved 0.5 s ahead
        began = time.monotonic()
        waiting = asyncio.create_task(limiter.acquire())
        await wait_until(lambda: limiter.reservations == 2, what="the second send's reservation")
        await limiter.pause(0.8)
        await waiting
        return [time.monotonic() - began]

    (waited,) = in_loop(redis_url, test)
    assert waited >= 0.8


class PttlCounting(aioredis.Redis):
    """A real Redis client that counts its PTTL reads (a PauseGate's only command) and keeps the last."""

    reads = 0
    read_at = -math.inf
    last_ms = 0

    async def pttl(self, name: Any) -> int:
        self.reads += 1
        self.read_at = time.monotonic()
        self.last_ms = await super().pttl(name)
        return self.last_ms


def test_without_a_rate_only_the_pause_is_checked(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, int, float, float, PttlCounting]:
        counting = PttlCounting.from_url(redis_url)
        try:
            unlimited = throttle_for(counting, namespace, PROVIDER, ProviderSettings())
            assert isinstance(unlimited, PauseGate)
            began = time.monotonic()
            for _ in range(1000):
                await unlimited.acquire()
            free, reads = time.monotonic() - began, counting.reads
            other = aioredis.Redis.from_url(redis_url)
            try:
                await PauseGate(other, namespace, PROVIDER).pause(0.5)
            finally:
                await other.aclose()
            set_at = time.monotonic()

            def stale() -> bool:
                return time.monotonic() - counting.read_at >= PAUSE_REFRESH_S

            await wait_until(stale, what="the gate's view of the pause to be due a refresh")
            began = time.monotonic()
            await unlimited.acquire()
            return free, reads, set_at, time.monotonic() - began, counting
        finally:
            await counting.aclose()

    free, reads, set_at, paused, counting = in_loop(redis_url, test)
    assert reads <= 1 + free / PAUSE_REFRESH_S  # one Redis read per refresh period, not one per send
    # the gate read the pause once its view was due a refresh: what was left of the 0.5 s
    assert 0 < counting.last_ms / 1000 <= 0.5 - (counting.read_at - set_at) + EPS
    assert paused >= counting.last_ms / 1000 - EPS  # and held the send for all of it


def test_throttle_for_a_configured_rate(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> None:
        settings = ProviderSettings.model_validate({"rate_limit": 200, "burst": 4})
        limiter = throttle_for(client, namespace, PROVIDER, settings)
        assert isinstance(limiter, RateLimiter) and limiter.max_batch == 4
        default = throttle_for(client, namespace, PROVIDER, ProviderSettings(rate_limit=200))
        assert isinstance(default, RateLimiter) and default.max_batch == 10

    in_loop(redis_url, test)


def test_four_processes_hammering_one_limit_stay_within_it(redis_url: str) -> None:
    """4 processes x 50 tasks at 200/s for 5 s: rate within 5%, no one-second window over 110%."""
    report = run(redis_url, rate=200, processes=4, duration=5, concurrency=50)
    granted = report["granted"]
    assert abs(granted["rate_vs_limit"] - 1) <= 0.05, report
    assert granted["worst_window_vs_limit"] <= 1.10, report
    assert passed(granted)
    assert report["round_trips_per_send"] < 0.5  # reservations are batched


def test_a_worker_run_keeps_the_providers_limit(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    """`leadctl work` (2 processes x 50 in flight) at providers.twilio.rate_limit 100, seen by the provider.

    The limiter decides when sends start; what the provider sees adds each request's transport time.
    A cold worker's first requests (new connections while its loop is busy starting up) can arrive a
    little late and together, so the one-second windows are checked once the run is warm (0.5 s).
    """
    write_leads(tmp_path / "leads.csv", 400)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url, "    rate_limit: 100\n")
        for command in (
            ["ingest", str(tmp_path / "leads.csv")],
            ["work", "--channel", "sms", "--workers", "2", "--concurrency", "50", "--burst"],
        ):
            done = run_leadctl(["--config", str(config), *command], leadctl_env)
            assert done.returncode == 0, done.stderr
        accepted = sorted(m["time"] for m in sandbox.messages())

    assert len(accepted) == 400
    assert (len(accepted) - default_burst(100)) / (accepted[-1] - accepted[0]) <= 100 * 1.05
    assert worst_window([t for t in accepted if t >= accepted[0] + 0.5]) <= 110
