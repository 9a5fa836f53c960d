"""The SMTP adapter against a real SMTP server (aiosmtpd) on loopback: no mocks."""

from __future__ import annotations

import asyncio
import email
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from leadctl.config import ProviderSettings
from leadctl.providers.base import AUTH_ERROR, ProviderError, SendResult
from tests.support.providers import Outcome, failure, message, provider_settings, send, success
from tests.support.servers import free_port

SENDER = "ofertas@leadctl.example"
USER, PASSWORD = "leadctl", "s3cret"


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses magic recipients."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    ehlos: int = 0
    data_commands: int = 0
    hang: bool = False  # leave DATA unanswered until the server stops

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.partition("@")[0]
        if local == "invalid":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local == "busy":
            return "451 4.3.0 Temporary lookup failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self.hang:
            await asyncio.Event().wait()  # cancelled when the server stops
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        raw = envelope.original_content or b""
        self.messages.append(email.message_from_bytes(raw, policy=default_policy))  # type: ignore[arg-type]
        return "250 2.0.0 Ok: queued as SANDBOX1"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int
    controller: Controller

    def url(self, scheme: str = "smtp") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"


def start_server(mailbox: Mailbox, port: int | None = None, **smtp_options: Any) -> SmtpServer:
    port = port or free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    return SmtpServer(mailbox, port, controller)


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    running = start_server(Mailbox(), authenticator=authenticator, auth_require_tls=False)
    yield running
    running.controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    running = start_server(Mailbox(), tls_context=context, require_starttls=True)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    yield running, bundle
    running.controller.stop()


def smtp_settings(base_url: str, **overrides: Any) -> ProviderSettings:
    raw = {"base_url": base_url, "from": SENDER, "username": USER, "password": PASSWORD, "starttls": False}
    return provider_settings("smtp", **{**raw, **overrides})


def mail(to: str = "ana@example.com", lead_id: int = 1, html: str | None = "<p>Olá Ana</p>") -> Any:
    return message(to, "email", lead_id=lead_id, body="Olá Ana!", subject="Oferta para você", html=html)


def test_success_stores_message_id_and_delivers_both_parts(server: SmtpServer) -> None:
    result = success(smtp_settings(server.url()), mail())
    assert result.message_id.startswith("<") and result.message_id.endswith("@leadctl.example>")
    assert "queued as SANDBOX1" in (result.details or {}).get("response", "")
    (received,) = server.mailbox.messages
    assert received["Message-ID"] == result.message_id
    assert (received["From"], received["To"], received["Subject"]) == (
        SENDER,
        "ana@example.com",
        "Oferta para você",
    )
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Olá Ana!"
    assert html is not None and html.get_content().strip() == "<p>Olá Ana</p>"
    assert server.mailbox.envelopes == [(SENDER, ["ana@example.com"])]


def test_one_pooled_connection_for_many_sends(server: SmtpServer) -> None:
    outcomes = send(smtp_settings(server.url()), *(mail(f"lead{i}@example.com", i) for i in range(5)))
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert server.mailbox.ehlos == 1 and len(server.mailbox.messages) == 5


def test_reconnects_when_the_server_dropped_the_pooled_connection() -> None:
    mailbox = Mailbox()
    first = start_server(mailbox)
    settings = smtp_settings(first.url(), username=None, password=None)
    outcomes: list[Outcome] = []

    async def go() -> None:
        from leadctl.providers.registry import create_provider, make_session

        nonlocal first
        async with make_session(1) as session:
            provider = create_provider("mail", settings, session)
            outcomes.append(await provider.send(mail("a@example.com", 1)))
            await asyncio.to_thread(first.controller.stop)
            first = await asyncio.to_thread(start_server, mailbox, first.port)
            outcomes.append(await provider.send(mail("b@example.com", 2)))
            await provider.close()  # type: ignore[attr-defined]

    try:
        asyncio.run(go())
    finally:
        first.controller.stop()
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert [m["To"] for m in mailbox.messages] == ["a@example.com", "b@example.com"]


def test_5xx_recipient_is_permanent_and_the_connection_carries_on(server: SmtpServer) -> None:
    refused, sent = send(smtp_settings(server.url()), mail("invalid@example.com"), mail("ana@example.com", 2))
    assert isinstance(refused, ProviderError) and (refused.kind, refused.code) == ("permanent", "550")
    assert "invalid@example.com" not in str(refused)
    assert isinstance(sent, SendResult)
    assert server.mailbox.ehlos == 1 and len(server.mailbox.messages) == 1


def test_4xx_recipient_is_transient(server: SmtpServer) -> None:
    error = failure(smtp_settings(server.url()), mail("busy@example.com"))
    assert (error.kind, error.code) == ("transient", "451")
    assert server.mailbox.messages == []


def test_wrong_password_is_an_auth_error(server: SmtpServer) -> None:
    error = failure(smtp_settings(server.url(), password="wrong"), mail())
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)
    assert "wrong" not in str(error) and server.mailbox.messages == []


def test_no_server_is_transient() -> None:
    error = failure(smtp_settings(f"smtp://127.0.0.1:{free_port()}"), mail())
    assert error.kind == "transient"


def test_no_answer_to_data_is_in_doubt_and_sent_once() -> None:
    running = start_server(Mailbox(hang=True))
    try:
        error = failure(
            smtp_settings(running.url(), username=None, password=None, read_timeout_ms=300), mail()
        )
    finally:
        running.controller.stop()
    assert error.kind == "in_doubt"
    assert running.mailbox.data_commands == 1


def test_starttls_with_the_servers_ca(tls_server: tuple[SmtpServer, Path]) -> None:
    running, bundle = tls_server
    settings = smtp_settings(
        running.url(), username=None, password=None, starttls=True, cert_bundle=str(bundle)
    )
    success(settings, mail())
    assert len(running.mailbox.messages) == 1


def test_untrusted_certificate_stops_the_worker(tls_server: tuple[SmtpServer, Path]) -> None:
    running, _ = tls_server
    error = failure(smtp_settings(running.url(), username=None, password=None, starttls=True), mail())
    assert (error.kind, error.code) == ("permanent", AUTH_ERROR)
    assert "TLS" in str(error) and running.mailbox.messages == []


def test_implicit_tls(ca: trustme.CA, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    running = start_server(Mailbox(), ssl_context=context)
    try:
        settings = smtp_settings(
            running.url("smtps"), username=None, password=None, starttls=None, cert_bundle=str(bundle)
        )
        success(settings, mail())
    finally:
        running.controller.stop()
    assert len(running.mailbox.messages) == 1


def test_sms_is_refused(server: SmtpServer) -> None:
    error = failure(smtp_settings(server.url()), message("+5511987654321", "sms"))
    assert (error.kind, error.code) == ("permanent", "channel")
    assert server.mailbox.ehlos == 0
