"""The sandbox provider server itself: what it records and counts, in a thread or a process, and its
latency model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from leadctl.errors import UsageError
from leadctl.local.sandbox.server import SandboxHandle, SandboxProcess, SandboxServer, sandbox_in_thread
from leadctl.providers.base import ErrorKind, SendResult
from tests.support.providers import message, send, twilio_settings

LEAD = "+5511987654321"


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


def test_sandbox_counts_duplicates(sandbox: SandboxHandle) -> None:
    send(
        twilio_settings(sandbox.base_url),
        message(LEAD, "sms"),
        message(LEAD, "sms", lead_id=2),
        message("+5511912345678", "sms"),
    )
    stats = sandbox.stats()
    assert (stats["requests"], stats["accepted"], stats["duplicates"]) == (3, 3, 1)
    sandbox.reset()
    assert (sandbox.stats()["accepted"], sandbox.messages()) == (0, [])


def test_sandbox_process_over_http() -> None:
    with SandboxProcess(seed=1) as sandbox:
        (result,) = send(twilio_settings(sandbox.base_url), message(LEAD, "sms"))
        assert isinstance(result, SendResult)
        assert [m["sid"] for m in sandbox.messages()] == [result.message_id]
        assert sandbox.stats()["accepted"] == 1
        sandbox.reset()
        assert sandbox.messages() == []


def test_latency_median_and_p99() -> None:
    async def go() -> list[float]:
        server = SandboxServer(latency_ms=5, latency_p99_ms=40, seed=3)
        return [server._rng.lognormvariate(server._latency_mu, server._latency_sigma) for _ in range(20_000)]

    delays = sorted(asyncio.run(go()))
    assert 0.0045 < delays[len(delays) // 2] < 0.0055
    assert 0.034 < delays[int(len(delays) * 0.99)] < 0.046


def test_sandbox_rejects_a_p99_below_the_median() -> None:
    with pytest.raises(UsageError, match="latency_p99_ms"):
        SandboxServer(latency_ms=50, latency_p99_ms=10)


def test_a_magic_recipient_gets_its_refusal_whatever_the_error_rate() -> None:
    """Injected 500s fall on requests the API would take: a refused one is refused every time, so a
    test counting failed leads never sees one turned dead by two 500s in a row (the stats test did)."""
    with sandbox_in_thread(error_rate=0.9, seed=3) as sandbox:
        settings = twilio_settings(sandbox.base_url)
        outcomes = send(settings, *(message("+15005550001", "sms", lead_id=i) for i in range(20)))
        assert [(o.kind, o.code) for o in outcomes] == [(ErrorKind.PERMANENT, "21211")] * 20
        send(settings, *(message(f"+55119123{i:05d}", "sms", lead_id=100 + i) for i in range(20)))
        stats = sandbox.stats()
    assert stats["rejected"] == 20  # the refusals, every time
    assert stats["errors"] > 0 and stats["errors"] + stats["accepted"] == 20  # the faults hit the others
