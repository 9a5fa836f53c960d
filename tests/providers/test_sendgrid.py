"""The SendGrid adapter over real HTTP against the sandbox, one email and batches."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import SANDBOX_SENDGRID_KEY, SandboxHandle, sandbox_in_thread
from leadctl.providers.base import AUTH_ERROR, Message, Provider, ProviderError, SendResult
from leadctl.providers.sendgrid import SendGridProvider
from tests.support.providers import (
    HANG_S,
    Outcome,
    failure,
    message,
    provider_settings,
    run_with,
    send,
    success,
)

SENDER = "ofertas@leadctl.example"


def sendgrid_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    raw = {"base_url": base_url, "api_key": SANDBOX_SENDGRID_KEY, "from": SENDER, "from_name": "Ofertas"}
    return provider_settings("sendgrid", **{**raw, **overrides})


def email(to: str = "ana@example.com", lead_id: int = 1, html: str | None = None) -> Message:
    return message(
        to, "email", lead_id=lead_id, body=f"Olá {lead_id}!", subject=f"Oferta {lead_id}", html=html
    )


def send_many(settings: ProviderSettings, messages: Sequence[Message]) -> list[Outcome]:
    async def many(provider: Provider) -> list[Outcome]:
        assert isinstance(provider, SendGridProvider)
        return await provider.send_many(messages)

    return run_with(settings, many)


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


def test_one_email_stores_x_message_id(sandbox: SandboxHandle) -> None:
    result = success(sendgrid_settings(sandbox.base_url), email(html="<p>Olá</p>"))
    assert len(result.message_id) == 22
    (record,) = sandbox.messages()
    assert (record["sid"], record["provider"]) == (result.message_id, "sendgrid")
    assert (record["to"], record["from"], record["body"]) == ("ana@example.com", SENDER, "Olá 1!")


def test_send_many_packs_1000_personalizations_per_request(sandbox: SandboxHandle) -> None:
    messages = [email(f"lead{i}@example.com", lead_id=i) for i in range(2500)]
    outcomes = send_many(sendgrid_settings(sandbox.base_url), messages)
    assert all(isinstance(o, SendResult) for o in outcomes) and len(outcomes) == 2500
    assert sandbox.stats()["requests"] == 3
    records = {r["to"]: r for r in sandbox.messages()}
    assert len(records) == 2500 and records["lead7@example.com"]["body"] == "Olá 7!"
    ids = {o.message_id for o in outcomes if isinstance(o, SendResult)}
    assert ids == {r["sid"] for r in records.values()} and len(ids) == 3


def test_send_many_separates_shapes_and_repeated_addresses(sandbox: SandboxHandle) -> None:
    messages = [
        email("a@example.com", 1),
        email("b@example.com", 2, html="<b>2</b>"),
        email("a@example.com", 3),
    ]
    outcomes = send_many(sendgrid_settings(sandbox.base_url), messages)
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert sandbox.stats()["requests"] == 3  # html apart; the same address never twice in a request
    assert sandbox.stats()["duplicates"] == 1


def test_send_many_fails_only_the_refused_personalization(sandbox: SandboxHandle) -> None:
    messages = [email(f"lead{i}@example.com", lead_id=i) for i in range(5)]
    messages[3] = email("invalid@example.com", lead_id=3)
    outcomes = send_many(sendgrid_settings(sandbox.base_url), messages)
    refused = outcomes[3]
    assert isinstance(refused, ProviderError) and (refused.kind, refused.code) == ("permanent", "400")
    assert "personalizations.3.to.0.email" in str(refused) and "invalid@example.com" not in str(refused)
    assert all(isinstance(o, SendResult) for i, o in enumerate(outcomes) if i != 3)
    assert sandbox.stats()["requests"] == 2 and sandbox.stats()["accepted"] == 4


def test_invalid_address_is_permanent_and_tried_once(sandbox: SandboxHandle) -> None:
    error = failure(sendgrid_settings(sandbox.base_url), email("invalid@example.com"))
    assert (error.kind, error.code) == ("permanent", "400")
    assert "Does not contain a valid address" in str(error)
    assert sandbox.stats()["requests"] == 1 and sandbox.messages() == []


def test_bad_key_is_an_auth_error(sandbox: SandboxHandle) -> None:
    error = failure(sendgrid_settings(sandbox.base_url, api_key="SG.wrong"), email())
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)
    assert "SG.wrong" not in str(error)


def test_rate_limit_honours_x_ratelimit_reset() -> None:
    with sandbox_in_thread(rate_limit=1) as sandbox:
        outcomes = send(
            sendgrid_settings(sandbox.base_url), *(email(f"l{i}@example.com", i) for i in range(4))
        )
        errors = [o for o in outcomes if isinstance(o, ProviderError)]
        assert errors
        for error in errors:
            assert (error.kind, error.code) == ("transient", "429")
            assert error.retry_after is not None and 0 < error.retry_after <= 2


def test_server_error_is_transient_for_the_whole_batch() -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        outcomes = send_many(
            sendgrid_settings(sandbox.base_url), [email(f"l{i}@example.com", i) for i in range(3)]
        )
        assert all(isinstance(o, ProviderError) and o.kind == "transient" for o in outcomes)
        assert sandbox.stats()["requests"] == 1


def test_hang_leaves_the_batch_in_doubt_after_one_request() -> None:
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as sandbox:
        started = time.monotonic()
        settings = sendgrid_settings(sandbox.base_url, read_timeout_ms=300)
        outcomes = send_many(settings, [email(f"l{i}@example.com", i) for i in range(3)])
        assert all(isinstance(o, ProviderError) and o.kind == "in_doubt" for o in outcomes)
        assert time.monotonic() - started < HANG_S  # cut, not answered
        assert (sandbox.stats()["requests"], sandbox.stats()["accepted"]) == (1, 3)


def test_sms_is_refused_without_a_request(sandbox: SandboxHandle) -> None:
    outcomes = send_many(sendgrid_settings(sandbox.base_url), [message("+5511987654321", "sms"), email()])
    assert isinstance(outcomes[0], ProviderError) and outcomes[0].code == "channel"
    assert isinstance(outcomes[1], SendResult)
    assert sandbox.stats()["requests"] == 1


def test_send_many_keeps_up(sandbox: SandboxHandle) -> None:
    """10,000 emails in 10 requests: packing must not be the bottleneck."""
    messages = [email(f"lead{i}@example.com", lead_id=i) for i in range(10_000)]
    started = time.perf_counter()
    outcomes = send_many(sendgrid_settings(sandbox.base_url), messages)
    elapsed = time.perf_counter() - started
    assert sum(isinstance(o, SendResult) for o in outcomes) == 10_000
    assert sandbox.stats()["requests"] == 10
    assert elapsed < 10, elapsed
