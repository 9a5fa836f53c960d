"""The Zenvia adapter over real HTTP against the sandbox."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import SANDBOX_ZENVIA_TOKEN, SandboxHandle, sandbox_in_thread
from leadctl.providers.base import AUTH_ERROR, ProviderError
from tests.support.providers import HANG_S, failure, message, provider_settings, send, success

LEAD = "+5511987654321"
SENDER = "leadctl"


def zenvia_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    raw = {"base_url": base_url, "api_token": SANDBOX_ZENVIA_TOKEN, "from": SENDER}
    return provider_settings("zenvia", **{**raw, **overrides})


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_success_stores_zenvia_id(sandbox: SandboxHandle, channel: str) -> None:
    result = success(zenvia_settings(sandbox.base_url), message(LEAD, channel))
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", result.message_id)
    (record,) = sandbox.messages()
    assert (record["sid"], record["provider"], record["from"]) == (result.message_id, "zenvia", SENDER)
    assert record["to"] == "5511987654321"  # digits, no '+'


def test_validation_error_is_permanent_with_details(sandbox: SandboxHandle) -> None:
    error = failure(zenvia_settings(sandbox.base_url), message("+15005550001", "sms"))
    assert (error.kind, error.code) == ("permanent", "VALIDATION_ERROR")
    assert "to:" in str(error) and "15005550001" not in str(error)
    assert sandbox.stats()["requests"] == 1 and sandbox.messages() == []


def test_bad_token_is_an_auth_error(sandbox: SandboxHandle) -> None:
    error = failure(zenvia_settings(sandbox.base_url, api_token="nope"), message(LEAD, "sms"))
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)
    assert "AUTHENTICATION_ERROR" in str(error) and sandbox.stats()["requests"] == 1


def test_rate_limit_is_transient_with_retry_after() -> None:
    with sandbox_in_thread(rate_limit=1) as sandbox:
        outcomes = send(
            zenvia_settings(sandbox.base_url), *(message(f"+551198765432{i}", "sms") for i in range(4))
        )
        errors = [o for o in outcomes if isinstance(o, ProviderError)]
        assert errors
        assert all((e.kind, e.code, e.retry_after) == ("transient", "TOO_MANY_REQUESTS", 1.0) for e in errors)


def test_server_error_is_transient() -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        error = failure(zenvia_settings(sandbox.base_url), message(LEAD, "sms"))
        assert (error.kind, error.code) == ("transient", "INTERNAL_ERROR")


def test_hang_is_in_doubt_after_one_request() -> None:
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as sandbox:
        started = time.monotonic()
        error = failure(zenvia_settings(sandbox.base_url, read_timeout_ms=300), message(LEAD, "sms"))
        assert error.kind == "in_doubt" and time.monotonic() - started < HANG_S  # cut, not answered
        assert (sandbox.stats()["requests"], sandbox.stats()["hung"]) == (1, 1)


def test_email_is_refused_without_a_request(sandbox: SandboxHandle) -> None:
    error = failure(zenvia_settings(sandbox.base_url), message("ana@example.com", "email"))
    assert (error.kind, error.code) == ("permanent", "channel")
    assert sandbox.stats()["requests"] == 0
