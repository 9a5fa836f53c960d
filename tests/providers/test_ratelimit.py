"""The shared rate limit over real Redis: the GCRA script, batched reservations, the pause, many processes."""

from __future__ import annotations

import asyncio
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

PROVIDER = "twilio"


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
    async def test(client: aioredis.Redis) -> list[Grant]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=10, burst=5)
        return [await limiter.reserve(5), await limiter.reserve(1), await limiter.reserve(2)]

    burst, one, two = in_loop(redis_url, test)
    assert burst == Grant(5, 0.0)
    assert one.count == 1 and one.wait == pytest.approx(0.1, abs=0.01)
    # two more go together once the second of them is due, 0.3 s after the burst
    assert two.count == 2 and two.wait == pytest.approx(0.3, abs=0.01)


def test_a_reservation_is_capped_at_the_burst_and_keys_expire(
    namespace: str, redis_url: str, redis_client: Any
) -> None:
    async def test(client: aioredis.Redis) -> Grant:
        return await RateLimiter(client, namespace, PROVIDER, rate=100, burst=5).reserve(50)

    assert in_loop(redis_url, test).count == 5
    ttl = redis_client.pttl(keys.rate_limit(namespace, PROVIDER))
    assert 0 < ttl <= 1100


def test_concurrent_acquires_keep_the_steady_rate(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> list[float]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=100, burst=1)
        granted: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            granted.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(41)))
        return sorted(granted)

    granted = in_loop(redis_url, test)
    assert granted[-1] - granted[0] == pytest.approx(0.4, abs=0.03)
    # burst 1: the k-th send never starts before k intervals (it may start late, never early)
    assert all(t - granted[0] >= k * 0.01 - 0.003 for k, t in enumerate(granted))


def test_a_busy_process_reserves_in_batches(namespace: str, redis_url: str) -> None:
    """2,000 sends at 2,000/s from 200 tasks: about one round trip per burst (100), not per send."""

    async def test(client: aioredis.Redis) -> tuple[float, int]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=2000)
        began = time.monotonic()

        async def ten() -> None:
            for _ in range(10):
                await limiter.acquire()

        await asyncio.gather(*(ten() for _ in range(200)))
        return time.monotonic() - began, limiter.reservations

    elapsed, round_trips = in_loop(redis_url, test)
    assert 0.94 <= elapsed <= 1.1  # the first burst (100) at once, then 1,900 at 2,000/s
    assert round_trips <= 25


def test_acquire_n_larger_than_the_burst_takes_several_reservations(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, int]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=100, burst=10)
        began = time.monotonic()
        await limiter.acquire(30)
        return time.monotonic() - began, limiter.reservations

    elapsed, round_trips = in_loop(redis_url, test)
    assert round_trips == 3
    assert elapsed == pytest.approx(0.2, abs=0.03)


def test_each_sender_has_its_own_limit_under_the_providers(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, float]:
        limiter = RateLimiter(client, namespace, PROVIDER, per_sender=10, burst=1)

        async def five(sender: str) -> None:
            for _ in range(5):
                await limiter.acquire(sender=sender)

        began = time.monotonic()
        await asyncio.gather(five("+15005550006"), five("+15005550007"))
        two_senders = time.monotonic() - began

        capped = RateLimiter(client, namespace, "capped", rate=10, per_sender=1000, burst=1)
        began = time.monotonic()
        await asyncio.gather(*(capped.acquire(sender=s) for s in ("a", "b", "c", "d", "e", "a", "b")))
        return two_senders, time.monotonic() - began

    two_senders, capped = in_loop(redis_url, test)
    # never faster than the limits allow; a loaded machine may only add delay, never reach the 0.9 s
    # that one shared sender limit would take
    assert 0.35 <= two_senders < 0.65  # the two senders' 10/s limits run in parallel
    assert 0.55 <= capped < 0.85  # the provider's 10/s binds, whatever the senders' limits


def test_a_pause_holds_every_process_and_is_never_shortened(
    namespace: str, redis_url: str, redis_client: Any
) -> None:
    async def test(client: aioredis.Redis) -> float:
        other = aioredis.Redis.from_url(redis_url)  # another worker process's connection
        try:
            here = RateLimiter(client, namespace, PROVIDER, rate=1000)
            there = RateLimiter(other, namespace, PROVIDER, rate=1000)
            await here.pause(0.4)
            await here.pause(0.1)  # a shorter Retry-After does not cut the pause short
            began = time.monotonic()
            await there.acquire()
            return time.monotonic() - began
        finally:
            await other.aclose()

    waited = in_loop(redis_url, test)
    assert 0.35 <= waited <= 0.5
    assert redis_client.exists(keys.provider_pause(namespace, PROVIDER)) == 0


def test_a_pause_in_this_process_holds_sends_already_reserved(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> list[float]:
        limiter = RateLimiter(client, namespace, PROVIDER, rate=10, burst=1)
        await limiter.acquire()  # the next one is reserved 0.1 s ahead
        began = time.monotonic()
        waiting = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.02)
        await limiter.pause(0.3)
        await waiting
        return [time.monotonic() - began]

    (waited,) = in_loop(redis_url, test)
    assert waited >= 0.3


def test_without_a_rate_only_the_pause_is_checked(namespace: str, redis_url: str) -> None:
    async def test(client: aioredis.Redis) -> tuple[float, float]:
        unlimited = throttle_for(client, namespace, PROVIDER, ProviderSettings())
        assert isinstance(unlimited, PauseGate)
        began = time.monotonic()
        for _ in range(1000):
            await unlimited.acquire()
        free = time.monotonic() - began
        other = aioredis.Redis.from_url(redis_url)
        try:
            await PauseGate(other, namespace, PROVIDER).pause(0.5)
        finally:
            await other.aclose()
        await asyncio.sleep(PAUSE_REFRESH_S)
        began = time.monotonic()
        await unlimited.acquire()
        return free, time.monotonic() - began

    free, paused = in_loop(redis_url, test)
    assert free < 0.2
    assert 0.3 <= paused <= 0.45


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
