"""Providers over real HTTP against the sandbox on loopback: successes, every failure class, no resends."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.local.sandbox.server import SandboxHandle, sandbox_in_thread
from leadctl.providers.base import Message, ProviderError, SendResult
from leadctl.providers.http import client_timeout
from leadctl.providers.registry import create_provider, make_session
from tests.support.providers import HANG_S, SENDER, failure, send, twilio_settings
from tests.support.servers import free_port

LEAD = "+5511987654321"


def message(to: str = LEAD, channel: str = "sms", lead_id: int = 1) -> Message:
    return Message(lead_id=lead_id, channel=channel, to=to, body="Olá Ana! Oferta & desconto 100%")


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with sandbox_in_thread(seed=7) as handle:
        yield handle


def test_success_returns_sid_and_is_recorded(sandbox: SandboxHandle) -> None:
    (result,) = send(twilio_settings(sandbox.base_url), message())
    assert isinstance(result, SendResult)
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.message_id)
    (record,) = sandbox.messages()
    assert record["sid"] == result.message_id
    assert (record["to"], record["from"], record["body"]) == (LEAD, SENDER, message().body)
    assert sandbox.stats()["requests"] == 1


@pytest.mark.parametrize(
    ("to", "code", "opted_out"),
    [
        ("+15005550001", "21211", False),
        ("+15005550009", "21614", False),
        ("+15005550004", "21610", True),
        ("+15005550002", "21612", False),
        ("+15005550003", "21408", False),
    ],
)
def test_magic_numbers_are_permanent(sandbox: SandboxHandle, to: str, code: str, opted_out: bool) -> None:
    error = failure(twilio_settings(sandbox.base_url), message(to))
    assert (error.kind, error.code, error.opted_out) == ("permanent", code, opted_out)
    assert to not in str(error)  # the recipient is masked
    assert sandbox.stats()["requests"] == 1
    assert sandbox.messages() == []


def test_bad_credentials_are_an_auth_error(sandbox: SandboxHandle) -> None:
    error = failure(twilio_settings(sandbox.base_url, auth_token="wrong"), message())
    assert (error.kind, error.code) == ("permanent", "auth")
    assert "20003" in str(error) and "wrong" not in str(error)
    assert sandbox.stats()["requests"] == 1 and sandbox.messages() == []


def test_server_errors_are_transient() -> None:
    with sandbox_in_thread(error_rate=1.0) as sandbox:
        error = failure(twilio_settings(sandbox.base_url), message())
        assert (error.kind, error.code) == ("transient", "20500")
        assert sandbox.stats()["accepted"] == 0


def test_rate_limit_is_transient_with_retry_after() -> None:
    with sandbox_in_thread(rate_limit=1) as sandbox:
        results = send(twilio_settings(sandbox.base_url), *(message(f"+551198765432{i}") for i in range(4)))
        errors = [r for r in results if isinstance(r, ProviderError)]
        assert errors, results  # 4 requests within milliseconds: at most 2 fit in 1/s
        assert all((e.kind, e.code, e.retry_after) == ("transient", "20429", 1.0) for e in errors)
        assert sandbox.stats()["accepted"] == len(results) - len(errors)


def test_read_timeout_is_in_doubt_and_not_resent() -> None:
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as sandbox:
        started = time.monotonic()
        error = failure(twilio_settings(sandbox.base_url, read_timeout_ms=300), message())
        assert error.kind == "in_doubt"
        assert time.monotonic() - started < HANG_S  # cut, not answered
        stats = sandbox.stats()
        assert (stats["requests"], stats["accepted"], stats["hung"]) == (1, 1, 1)


def test_the_timeouts_of_a_request_are_the_providers_settings() -> None:
    """What ends a hung request (above) early: the settings' read timeout, 300 ms, not a default."""
    timeout = client_timeout(
        twilio_settings("http://127.0.0.1:9", read_timeout_ms=300, connect_timeout_ms=700)
    )
    assert (timeout.sock_read, timeout.sock_connect, timeout.total) == (0.3, 0.7, None)


def test_disconnect_after_request_is_in_doubt() -> None:
    """A server that reads the request and hangs up: the message may have gone out."""
    seen: list[bytes] = []

    async def go() -> ProviderError:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, make_session(1) as session:
            provider = create_provider("twilio", twilio_settings(f"http://127.0.0.1:{port}"), session)
            with pytest.raises(ProviderError) as caught:
                await provider.send(message())
        return caught.value

    assert asyncio.run(go()).kind == "in_doubt"
    assert len(seen) == 1  # aiohttp did not retry the POST on a fresh connection


def test_refused_connection_is_transient() -> None:
    error = failure(twilio_settings(f"http://127.0.0.1:{free_port()}"), message())
    assert error.kind == "transient"


def test_whatsapp_uses_prefixed_addresses(sandbox: SandboxHandle) -> None:
    (result,) = send(twilio_settings(sandbox.base_url), message(channel="whatsapp"))
    assert isinstance(result, SendResult)
    (record,) = sandbox.messages()
    assert (record["to"], record["from"]) == (f"whatsapp:{LEAD}", f"whatsapp:{SENDER}")


def test_messaging_service_replaces_from(sandbox: SandboxHandle) -> None:
    settings = twilio_settings(sandbox.base_url, messaging_service_sid="MG" + "1" * 32, **{"from": None})
    (result,) = send(settings, message())
    assert isinstance(result, SendResult)
    assert sandbox.messages()[0]["from"] is None


def test_email_is_refused_without_a_request(sandbox: SandboxHandle) -> None:
    error = failure(twilio_settings(sandbox.base_url), message("ana@example.com", channel="email"))
    assert error.kind == "permanent"
    assert sandbox.stats()["requests"] == 0


def test_log_provider_sends_nothing() -> None:
    async def go() -> SendResult:
        async with make_session(1) as session:
            return await create_provider("log", ProviderSettings(), session).send(message(lead_id=42))

    assert asyncio.run(go()).message_id == "log-42"


@pytest.mark.parametrize(
    ("name", "raw", "complaint"),
    [
        ("pigeon", {}, "unknown type 'pigeon'"),
        ("zenvia", {}, "needs api_token and from"),
        ("meta", {"type": "whatsapp_cloud", "access_token": "t"}, "needs phone_number_id"),
        ("sg", {"type": "sendgrid", "from": "a@b.co"}, "needs api_key"),
        ("mail", {"type": "smtp", "from": "a@b.co", "base_url": "http://x"}, "smtp://host:port"),
        ("mail", {"type": "smtp", "from": "a@b.co", "username": "u"}, "both username and password"),
        ("hook", {"type": "webhook", "url": "ftp://x"}, "url must be an http(s) URL"),
        ("hook", {"type": "webhook", "url": "http://x", "headers": ["a"]}, "headers must be a mapping"),
        (
            "meta",
            {"type": "whatsapp_cloud", "access_token": "t", "phone_number_id": "1", "template": {}},
            "name",
        ),
        ("twilio", {"account_sid": "AC1", "auth_token": "t", "from": "+1", "content_variables": [1]}, "map"),
        ("sms", {"type": "twilio", "from": SENDER}, "needs account_sid and auth_token"),
        ("twilio", {"account_sid": "AC1", "auth_token": "t"}, "needs 'from' or messaging_service_sid"),
    ],
)
def test_registry_rejects_bad_config(name: str, raw: dict[str, Any], complaint: str) -> None:
    async def go() -> None:
        async with make_session(1) as session:
            create_provider(name, ProviderSettings.model_validate(raw), session)

    with pytest.raises(ConfigError, match=re.escape(complaint)):
        asyncio.run(go())


def test_sms_result_carries_twilio_segments(sandbox: SandboxHandle) -> None:
    long_text = Message(lead_id=1, channel="sms", to=LEAD, body="Olá " + "a" * 70)
    short, long = send(twilio_settings(sandbox.base_url), message(), long_text)
    assert isinstance(short, SendResult) and isinstance(long, SendResult)
    assert (short.segments, long.segments) == (1, 2)  # "á" makes both UCS-2: 70 / 67 units
    assert sandbox.stats()["providers"] == {"twilio": 2}


def test_number_without_plus_is_refused(sandbox: SandboxHandle) -> None:
    error = failure(twilio_settings(sandbox.base_url), message(LEAD.removeprefix("+")))
    assert (error.kind, error.code) == ("permanent", "21211")


def test_whatsapp_content_template(sandbox: SandboxHandle) -> None:
    settings = twilio_settings(
        sandbox.base_url, content_sid="HX" + "0" * 32, content_variables={"1": "name", "2": "cidade"}
    )
    item = Message(1, "whatsapp", LEAD, "ignored", fields={"name": "Ana", "cidade": "Recife"})
    (result,) = send(settings, item)
    assert isinstance(result, SendResult)
    (record,) = sandbox.messages()
    assert record["body"] == "HX" + "0" * 32 + ' {"1":"Ana","2":"Recife"}'
    (sms,) = send(settings, message())  # SMS keeps its Body
    assert isinstance(sms, SendResult) and sandbox.messages()[1]["body"] == message().body


def test_content_template_missing_field_fails_without_a_request(sandbox: SandboxHandle) -> None:
    settings = twilio_settings(sandbox.base_url, content_sid="HX1", content_variables={"1": "cidade"})
    error = failure(settings, Message(1, "whatsapp", LEAD, "x", fields={"name": "Ana"}))
    assert (error.kind, error.code) == ("permanent", "template_field")
    assert "cidade" in str(error) and sandbox.stats()["requests"] == 0


def test_twilio_form_values_encode_exactly_as_quote_plus() -> None:
    from urllib.parse import quote_plus

    from leadctl.providers.twilio import _form_value

    for value in ("+5511987654321", "whatsapp:+5511987654321", "+12 34", "+", "+٣٣٣", "Oi Ana & cia!", ""):
        assert _form_value(value) == quote_plus(value)
