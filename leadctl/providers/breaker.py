"""A circuit breaker per provider, kept in each worker process.

    closed --``failures`` consecutive failures--> open --``reset_s``--> half-open: one probe
    half-open --probe succeeds--> closed;  half-open --probe fails--> open again

Per process on purpose: at volume every process meets an outage within its own first few sends, so
sharing the state would save a handful of failed attempts while costing a Redis round trip per result
and making failover depend on Redis being healthy when something else already is not. The price is
bounded: up to ``failures`` failed attempts and one probe per process per ``reset_s`` — harmless,
because a transient failure was certainly not sent and moves on to the next provider at once.

Results of sends that were already in flight when the breaker opened do not close it; only a
success once it is due a probe does. A probe that never reports (its task was cancelled) is replaced
after another ``reset_s``.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

log = logging.getLogger("leadctl.providers.breaker")

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """One provider's breaker: ``allow()`` before a send, ``record_success/failure()`` after it."""

    def __init__(self, name: str, failures: int = 5, reset_s: float = 30.0) -> None:
        self.name = name
        self.failures = failures
        self.reset_s = reset_s
        self._run = 0  # consecutive failures while closed
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._probe_at is not None or self.retry_in() == 0 else "open"

    def retry_in(self) -> float:
        """Seconds until ``allow()`` may say yes again (0 when closed or due a probe)."""
        if self._opened_at is None:
            return 0.0
        since = self._probe_at if self._probe_at is not None else self._opened_at
        return max(0.0, since + self.reset_s - time.monotonic())

    def allow(self) -> bool:
        """Whether a send may go now; once open, True only for one probe every ``reset_s``."""
        if self._opened_at is None:
            return True
        if self.retry_in() > 0:
            return False
        self._probe_at = time.monotonic()
        return True

    def record_success(self) -> None:
        """The provider answered (accepted, or refused the message itself)."""
        if self._opened_at is not None and self._probe_at is None:
            return  # a send from before the breaker opened
        if self._opened_at is not None:
            log.warning("provider %s: circuit closed (probe succeeded)", self.name)
        self._run = 0
        self._opened_at = self._probe_at = None

    def record_failure(self) -> None:
        """The provider failed to answer usefully (5xx, connection refused, timeout)."""
        if self._opened_at is not None:
            if self._probe_at is not None:  # the probe failed
                self._opened_at, self._probe_at = time.monotonic(), None
                log.warning("provider %s: probe failed; circuit open %.0f s more", self.name, self.reset_s)
            return
        self._run += 1
        if self._run >= self.failures:
            self._opened_at = time.monotonic()
            log.warning(
                "provider %s: circuit open after %d failures in a row; probing again in %.0f s",
                self.name,
                self._run,
                self.reset_s,
            )
