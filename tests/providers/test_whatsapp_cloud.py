"""The WhatsApp Cloud API adapter over real HTTP against the sandbox."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leadctl.config import ProviderSettings
from leadctl.local.sandbox.server import (
    SANDBOX_META_TOKEN,
    SANDBOX_PHONE_NUMBER_ID,
    SandboxHandle,
    sandbox_in_thread,
)
from leadctl.providers.base import AUTH_ERROR, Message, ProviderError
from tests.support.providers import HANG_S, failure, message, provider_settings, send, success

LEAD = "+5511987654321"
TEMPLATE = {"name": "oferta_bf", "language": "pt_BR", "body_params": ["name", "cidade"]}


def meta_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    raw = {
        "base_url": base_url,
        "access_token": SANDBOX_META_TOKEN,
        "phone_number_id": SANDBOX_PHONE_NUMBER_ID,
    }
    return provider_settings("whatsapp_cloud", **{**raw, **overrides})


def whatsapp(to: str = LEAD, **extra: Any) -> Message:
    return message(to, "whatsapp", **extra)


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


def test_text_message_stores_wamid_and_wa_id(sandbox: SandboxHandle) -> None:
    result = success(meta_settings(sandbox.base_url), whatsapp())
    assert re.fullmatch(r"wamid\.[A-Za-z0-9_=-]+", result.message_id)
    assert result.details == {"wa_id": "5511987654321"}
    (record,) = sandbox.messages()
    assert (record["sid"], record["provider"]) == (result.message_id, "whatsapp_cloud")
    assert (record["to"], record["body"]) == ("5511987654321", whatsapp().body)  # digits, no '+'


def test_template_message_fills_body_parameters_from_lead_fields(sandbox: SandboxHandle) -> None:
    item = whatsapp(fields={"name": "Ana", "cidade": "Recife"})
    success(meta_settings(sandbox.base_url, template=TEMPLATE), item)
    assert sandbox.messages()[0]["body"] == "[oferta_bf/pt_BR] Ana | Recife"


def test_template_missing_a_field_fails_without_a_request(sandbox: SandboxHandle) -> None:
    error = failure(meta_settings(sandbox.base_url, template=TEMPLATE), whatsapp(fields={"name": "Ana"}))
    assert (error.kind, error.code) == ("permanent", "template_field")
    assert "cidade" in str(error)
    assert sandbox.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("to", "code", "kind", "opted_out"),
    [
        ("+15005550001", "131026", "permanent", False),
        ("+15005550002", "131047", "permanent", False),
        ("+15005550004", "131050", "permanent", True),
        ("+15005550005", "131056", "transient", False),
    ],
)
def test_meta_error_codes(sandbox: SandboxHandle, to: str, code: str, kind: str, opted_out: bool) -> None:
    error = failure(meta_settings(sandbox.base_url), whatsapp(to))
    assert (error.kind, error.code, error.opted_out) == (kind, code, opted_out)
    assert to[1:] not in str(error)  # the recipient is masked
    assert sandbox.stats()["requests"] == 1 and sandbox.messages() == []


def test_unknown_template_is_permanent(sandbox: SandboxHandle) -> None:
    template = {**TEMPLATE, "name": "missing_template", "body_params": []}
    error = failure(meta_settings(sandbox.base_url, template=template), whatsapp())
    assert (error.kind, error.code) == ("permanent", "132001")
    assert sandbox.stats()["requests"] == 1


def test_bad_token_is_an_auth_error(sandbox: SandboxHandle) -> None:
    error = failure(meta_settings(sandbox.base_url, access_token="expired"), whatsapp())
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)
    assert "190" in str(error) and "expired" not in str(error)
    assert sandbox.stats()["requests"] == 1


def test_unknown_phone_number_id_is_permanent(sandbox: SandboxHandle) -> None:
    error = failure(meta_settings(sandbox.base_url, phone_number_id="999"), whatsapp())
    assert (error.kind, error.code) == ("permanent", "100")


def test_rate_limit_is_transient_with_retry_after() -> None:
    with sandbox_in_thread(rate_limit=1) as sandbox:
        outcomes = send(meta_settings(sandbox.base_url), *(whatsapp(f"+551198765432{i}") for i in range(4)))
        errors = [o for o in outcomes if isinstance(o, ProviderError)]
        assert errors
        assert all((e.kind, e.code, e.retry_after) == ("transient", "130429", 1.0) for e in errors)


def test_server_error_is_transient() -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        error = failure(meta_settings(sandbox.base_url), whatsapp())
        assert (error.kind, error.code) == ("transient", "131000")
        assert sandbox.stats()["accepted"] == 0


def test_hang_is_in_doubt_after_one_request() -> None:
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as sandbox:
        started = time.monotonic()
        error = failure(meta_settings(sandbox.base_url, read_timeout_ms=300), whatsapp())
        assert error.kind == "in_doubt" and time.monotonic() - started < HANG_S  # cut, not answered
        stats = sandbox.stats()
        assert (stats["requests"], stats["accepted"], stats["hung"]) == (1, 1, 1)


def test_sms_is_refused_without_a_request(sandbox: SandboxHandle) -> None:
    error = failure(meta_settings(sandbox.base_url), message(LEAD, "sms"))
    assert (error.kind, error.code) == ("permanent", "channel")
    assert sandbox.stats()["requests"] == 0
