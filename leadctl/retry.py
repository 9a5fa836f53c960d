"""One retry policy: exponential backoff with full jitter, never shorter than a Retry-After.

A ``RetryPolicy`` is a value: how long the first pause is, how long pauses may grow, how many
attempts an operation gets, and which errors are worth another one. Its two hooks, ``retries``
(after a failure: try again?) and ``delay`` (how long to wait first), are all a loop asks of it;
the loops that use it hold no retry arithmetic of their own:

- ``Attempts`` runs one operation under a policy, counting its attempts. The worker sends each
  message through it with ``RetryPolicy.for_channel`` (``channels.<ch>.retry_initial_ms``,
  ``retry_max_ms``, ``max_attempts``; transient provider errors only). The first attempt is a plain
  ``await`` inside a ``try``: the common case pays for no retry machinery.
- ``Backoff`` paces a loop that keeps going through failures (``OUTAGE``: 0.1 s doubling to 5 s, no
  jitter, for as long as it takes): the worker's reading and recording while Redis or PostgreSQL is
  away, the shared rate limiter while it cannot reach Redis, the webhook server's writes while
  PostgreSQL refuses them. Its ``on_failure`` and ``on_recovery`` hooks tell whoever reports outages.
- The supervisor spaces the restarts of a crashed worker with ``RESTARTS``' delays.

The pause after ``n`` failed attempts is drawn uniformly from [0, min(max, initial x 2^(n-1))]
("full jitter"), or is that bound itself without jitter: tenacity's ``wait_random_exponential`` and
``wait_exponential``, which also keep a pause of a days-long outage from overflowing. An error's
``retry_after`` (a provider's 429 with Retry-After) is a floor under it. After the first failure,
``Attempts`` hands the operation to tenacity's ``AsyncRetrying``, with its own hooks as retry and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from leadctl.config import ChannelSettings
from leadctl.connections import redis_outage

T = TypeVar("T")


def dependency_outage(exc: BaseException) -> bool:
    """Redis or PostgreSQL away for now: wait and retry."""
    return isinstance(exc, psycopg.OperationalError) or redis_outage(exc)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and after how long (module doc).

    initial_s: the bound of the first pause; each further failure doubles it.
    max_s: the bound pauses stop growing at.
    attempts: attempts in all, the first included (None: no limit).
    jitter: draw each pause uniformly below its bound (full jitter) rather than wait the bound.
    retryable: the errors worth another attempt.
    """

    initial_s: float
    max_s: float
    attempts: int | None
    jitter: bool
    retryable: Callable[[BaseException], bool]
    _wait: wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = wait_random_exponential if self.jitter else wait_exponential
        object.__setattr__(self, "_wait", shape(multiplier=self.initial_s, max=self.max_s))

    @classmethod
    def for_channel(cls, channel: ChannelSettings, retryable: Callable[[BaseException], bool]) -> RetryPolicy:
        """A channel's provider retries: ``retry_initial_ms``, ``retry_max_ms`` and ``max_attempts``,
        with full jitter, on the errors ``retryable`` picks (a provider's transient ones)."""
        return cls(
            channel.retry_initial_ms / 1000,
            channel.retry_max_ms / 1000,
            channel.max_attempts,
            True,
            retryable,
        )

    def retries(self, exc: BaseException, failed: int) -> bool:
        """Hook: whether to try again after ``failed`` attempts, the last of which raised ``exc``."""
        return self.retryable(exc) and (self.attempts is None or failed < self.attempts)

    def delay(self, failed: int, exc: BaseException | None = None) -> float:
        """Hook: seconds to wait after ``failed`` attempts, the last of which raised ``exc``."""
        state = RetryCallState(None, None, (), {})
        state.attempt_number = failed
        pause = self._wait(state)
        retry_after = getattr(exc, "retry_after", None)
        return max(retry_after, pause) if retry_after else pause


OUTAGE = RetryPolicy(initial_s=0.1, max_s=5.0, attempts=None, jitter=False, retryable=dependency_outage)
"""Waiting out Redis or PostgreSQL: 0.1 s, doubling to 5 s, for as long as the outage lasts."""

RESTARTS = RetryPolicy(initial_s=0.5, max_s=10.0, attempts=None, jitter=False, retryable=lambda _: True)
"""Spacing a crashed worker's restarts: 0.5 s, doubling to 10 s (the supervisor caps their number)."""


class Attempts:
    """One operation's attempts under a policy.

    ``made`` counts the attempts made, the current one too (after a cancellation it tells how many
    requests may have gone out). By default every try is one; ``count`` may say otherwise: a send
    counts its provider requests, so a try refused before any request went out (every circuit open)
    is no attempt. Such a try never uses up the policy's attempts, and is asked again after its
    error's ``retry_after`` with no backoff: nothing was tried that could fail again.
    """

    __slots__ = ("_count", "_moved", "policy", "tries")

    def __init__(self, policy: RetryPolicy, count: Callable[[], int] | None = None) -> None:
        self.policy = policy
        self.tries = 0
        self._count = count
        self._moved = True

    @property
    def made(self) -> int:
        return self.tries if self._count is None else self._count()

    def retries(self, exc: BaseException) -> bool:
        """Hook for tenacity: whether the try that raised ``exc`` is worth another."""
        return self.policy.retryable(exc) and (
            self.policy.attempts is None or self.made < self.policy.attempts
        )

    def pause(self, exc: BaseException | None) -> float:
        """Seconds to wait before the next try (module doc), or only the error's retry_after after a
        try that made no attempt."""
        if not self._moved:
            return getattr(exc, "retry_after", None) or 0.0
        return self.policy.delay(self.made, exc)

    async def _try(self, operation: Callable[..., Awaitable[T]], *args: object) -> T:
        before = self.made
        self.tries += 1
        try:
            return await operation(*args)
        finally:
            self._moved = self.made > before

    async def run(self, operation: Callable[..., Awaitable[T]], *args: object) -> T:
        """``await operation(*args)``, again after each failure the policy retries; the last error
        is raised as it was."""
        try:  # the common case, a first try that succeeds, pays for no retry machinery
            return await self._try(operation, *args)
        except Exception as exc:
            if not self.retries(exc):
                raise
            pause = self.pause(exc)
        await asyncio.sleep(pause)
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=lambda state: self.pause(state.outcome.exception() if state.outcome else None),
            retry=retry_if_exception(self.retries),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._try(operation, *args)
        raise AssertionError("unreachable: tenacity re-raises the last error")


class Backoff:
    """Paces a loop through consecutive failures: each ``wait`` longer than the last, until ``reset``.

    Hooks: ``on_failure(exc, pause)`` on every failure, before pausing ``pause`` seconds;
    ``on_recovery()`` at the first success after some.
    """

    __slots__ = ("failed", "on_failure", "on_recovery", "policy")

    def __init__(
        self,
        policy: RetryPolicy,
        on_failure: Callable[[BaseException, float], None] | None = None,
        on_recovery: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_failure = on_failure
        self.on_recovery = on_recovery
        self.failed = 0

    def retries(self, exc: BaseException) -> bool:
        """Whether the loop should wait and go on after ``exc`` (else it raises it)."""
        return self.policy.retries(exc, self.failed + 1)

    def reset(self) -> None:
        """The loop's last round succeeded."""
        if self.failed:
            self.failed = 0
            if self.on_recovery is not None:
                self.on_recovery()

    async def wait(self, exc: BaseException, stop: asyncio.Event | None = None) -> None:
        """After a failure: pause by the policy, or until ``stop`` is set."""
        self.failed += 1
        pause = self.policy.delay(self.failed, exc)
        if self.on_failure is not None:
            self.on_failure(exc, pause)
        if stop is None:
            await asyncio.sleep(pause)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
