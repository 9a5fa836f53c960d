"""The retry policy: its pauses, which errors it retries, and the two loops that use it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg
import redis

from leadctl.config import ChannelSettings
from leadctl.providers.base import ErrorKind, ProviderError, transient
from leadctl.retry import OUTAGE, RESTARTS, Attempts, Backoff, RetryPolicy

CHANNEL = RetryPolicy.for_channel(
    ChannelSettings(max_attempts=3, retry_initial_ms=100, retry_max_ms=1000), transient
)


def _error(kind: ErrorKind, retry_after: float | None = None) -> ProviderError:
    return ProviderError(kind, f"a {kind} error", code="500", retry_after=retry_after)


def test_pauses_are_full_jitter_below_a_doubling_bound() -> None:
    for failed, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        pauses = [CHANNEL.delay(failed) for _ in range(200)]
        assert all(0 <= pause <= bound for pause in pauses)
        assert max(pauses) > bound / 2  # spread over the range, not pinned to one end


def test_a_retry_after_is_a_floor_under_the_pause() -> None:
    assert CHANNEL.delay(1, _error(ErrorKind.TRANSIENT, retry_after=2.5)) == 2.5
    assert 0 <= CHANNEL.delay(1, _error(ErrorKind.TRANSIENT)) <= 0.1


def test_the_outage_backoff_doubles_from_a_tenth_of_a_second_to_five() -> None:
    assert [OUTAGE.delay(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert OUTAGE.delay(100_000) == 5.0  # an outage of days: no overflow


def test_restarts_of_a_crashed_worker_double_from_half_a_second_to_ten() -> None:
    assert [RESTARTS.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_only_transient_provider_errors_are_retried_and_only_max_attempts_times() -> None:
    error = _error(ErrorKind.TRANSIENT)
    assert [CHANNEL.retries(error, failed) for failed in (1, 2, 3)] == [True, True, False]
    assert not CHANNEL.retries(_error(ErrorKind.PERMANENT), 1)
    assert not CHANNEL.retries(_error(ErrorKind.IN_DOUBT), 1)  # it may have been sent
    assert not CHANNEL.retries(ValueError("a bug"), 1)


def test_outages_of_redis_and_postgresql_are_retried_for_as_long_as_they_last() -> None:
    assert OUTAGE.retries(redis.ConnectionError("refused"), 10_000)
    assert OUTAGE.retries(psycopg.OperationalError("the server closed the connection"), 10_000)
    assert not OUTAGE.retries(psycopg.errors.UndefinedTable("no such table"), 1)
    assert not OUTAGE.retries(_error(ErrorKind.TRANSIENT), 1)


def test_attempts_counts_each_try_and_raises_the_last_error() -> None:
    quick = RetryPolicy(0.001, 0.001, 3, True, CHANNEL.retryable)

    def operation(errors: list[ProviderError]) -> Callable[[str], Awaitable[str]]:
        async def send(value: str) -> str:
            if errors:
                raise errors.pop(0)
            return value

        return send

    async def run(errors: list[ProviderError]) -> tuple[str | ProviderError, int]:
        attempts = Attempts(quick)
        try:
            return await attempts.run(operation(errors), "accepted"), attempts.made
        except ProviderError as exc:
            return exc, attempts.made

    flaky = [_error(ErrorKind.TRANSIENT), _error(ErrorKind.TRANSIENT)]
    assert asyncio.run(run(flaky)) == ("accepted", 3)
    refused = _error(ErrorKind.PERMANENT)
    assert asyncio.run(run([refused])) == (refused, 1)
    down = [_error(ErrorKind.TRANSIENT) for _ in range(4)]
    assert asyncio.run(run(list(down))) == (down[2], 3)


def test_a_backoff_reports_the_outage_and_the_recovery_once() -> None:
    seen: list[str] = []
    backoff = Backoff(
        RetryPolicy(0.001, 0.001, None, False, OUTAGE.retryable),
        on_failure=lambda exc, _: seen.append(f"failed: {exc}"),
        on_recovery=lambda: seen.append("recovered"),
    )

    async def outage() -> None:
        backoff.reset()  # nothing failed yet: nothing to report
        for _ in range(2):
            await backoff.wait(redis.ConnectionError("refused"))
        backoff.reset()
        backoff.reset()

    asyncio.run(outage())
    assert seen == ["failed: refused", "failed: refused", "recovered"]


def test_a_backoff_wait_ends_when_the_stop_event_is_set() -> None:
    backoff = Backoff(RetryPolicy(3600.0, 3600.0, None, False, OUTAGE.retryable))

    async def stopped() -> None:
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(backoff.wait(redis.ConnectionError("refused"), stop), timeout=30)

    asyncio.run(stopped())
    assert backoff.failed == 1
