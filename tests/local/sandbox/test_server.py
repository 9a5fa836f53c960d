"""The sandbox provider server itself: what it records and counts, in a thread or a process, and its
latency model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from leadctl.errors import UsageError
from leadctl.local.sandbox.server import SandboxHandle, SandboxProcess, SandboxServer, sandbox_in_thread
from leadctl.providers.base import SendResult
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
