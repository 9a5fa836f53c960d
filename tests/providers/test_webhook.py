"""The webhook adapter over real HTTP against the sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import SANDBOX_WEBHOOK_TOKEN, SandboxHandle, sandbox_in_thread
from leadctl.providers.base import AUTH_ERROR, ProviderError
from tests.support.providers import HANG_S, failure, message, provider_settings, send, success

LEAD = "+5511987654321"
AUTH = {"Authorization": f"Bearer {SANDBOX_WEBHOOK_TOKEN}"}


def webhook_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    return provider_settings("webhook", **{"url": f"{base_url}/webhook", "headers": AUTH, **overrides})


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({"id_field": "id"}, "wh_"), ({"id_header": "X-Request-Id"}, "wh_"), ({}, "webhook-42")],
)
def test_success_and_message_id(sandbox: SandboxHandle, overrides: dict[str, str], expected: str) -> None:
    result = success(webhook_settings(sandbox.base_url, **overrides), message(LEAD, "sms", lead_id=42))
    assert result.message_id.startswith(expected)
    (record,) = sandbox.messages()
    assert (record["provider"], record["to"]) == ("webhook", LEAD)  # E.164 with '+'
    if expected == "wh_":
        assert record["sid"] == result.message_id


def test_email_goes_with_subject_and_fields(sandbox: SandboxHandle) -> None:
    item = message("ana@example.com", "email", subject="Oi", html="<p>Oi</p>", fields={"cidade": "Recife"})
    success(webhook_settings(sandbox.base_url), item)
    assert sandbox.messages()[0]["to"] == "ana@example.com"


@pytest.mark.parametrize("to", ["+15005550001", "invalid@example.com"])
def test_refused_recipient_is_permanent(sandbox: SandboxHandle, to: str) -> None:
    error = failure(webhook_settings(sandbox.base_url), message(to, "sms"))
    assert (error.kind, error.code) == ("permanent", "422")
    assert to not in str(error)
    assert sandbox.stats()["requests"] == 1


def test_missing_authorization_is_an_auth_error(sandbox: SandboxHandle) -> None:
    error = failure(webhook_settings(sandbox.base_url, headers={}), message(LEAD, "sms"))
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)


def test_rate_limit_is_transient_with_retry_after() -> None:
    with sandbox_in_thread(rate_limit=1) as sandbox:
        outcomes = send(
            webhook_settings(sandbox.base_url), *(message(f"+551198765432{i}", "sms") for i in range(4))
        )
        errors = [o for o in outcomes if isinstance(o, ProviderError)]
        assert errors
        assert all((e.kind, e.code, e.retry_after) == ("transient", "429", 1.0) for e in errors)


def test_server_error_is_transient() -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        error = failure(webhook_settings(sandbox.base_url), message(LEAD, "sms"))
        assert (error.kind, error.code) == ("transient", "500")


def test_hang_is_in_doubt_after_one_request() -> None:
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as sandbox:
        started = time.monotonic()
        error = failure(webhook_settings(sandbox.base_url, read_timeout_ms=300), message(LEAD, "sms"))
        assert error.kind == "in_doubt" and time.monotonic() - started < HANG_S  # cut, not answered
        assert (sandbox.stats()["requests"], sandbox.stats()["hung"]) == (1, 1)
