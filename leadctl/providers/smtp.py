"""Email over SMTP with aiosmtplib: one pooled connection per worker process, reconnected on failure.

Configuration (``providers.<name>``): ``base_url`` ``smtp://host:port`` (STARTTLS when the server
offers it; ``starttls: true`` requires it, ``false`` never tries) or ``smtps://host:port`` (TLS from
the first byte); ``username`` / ``password`` to log in; ``from``; ``validate_certs`` (default true)
and ``cert_bundle`` (a CA file) for TLS. Connect and read timeouts come from the provider settings.

Sends share the connection one at a time (MAIL, RCPT, DATA). A reply 4xx is transient, 5xx is
permanent; refused credentials (and a 5xx greeting or a TLS failure: nothing a lead did) stop the
worker with code ``"auth"``. A connection that fails before DATA is transient (a stale pooled
connection is reopened once at once); one lost or timed out during DATA is in doubt. The message id
stored is the ``Message-ID`` header leadctl writes.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid

import aiohttp
import aiosmtplib
from yarl import URL

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.masking import mask_email
from leadctl.providers import http
from leadctl.providers.base import AUTH_ERROR, ErrorKind, Message, ProviderError, SendResult

_NO_ANSWER = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError)


def _reply_error(exc: aiosmtplib.SMTPResponseException, to: str) -> ProviderError:
    """4xx: try again later; 5xx: refused for good."""
    kind = ErrorKind.TRANSIENT if 400 <= exc.code < 500 else ErrorKind.PERMANENT
    text = str(exc.message).replace(to, mask_email(to))
    return ProviderError(kind, f"smtp {exc.code}: {text}", code=str(exc.code))


def _tls_failure(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class SmtpProvider:
    """One SMTP server and account; ``close()`` says QUIT."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        (sender,) = http.required(name, "smtp", settings, "from")
        url = URL(settings.base_url or "smtp://localhost")
        if url.scheme not in ("smtp", "smtps") or not url.host:
            raise ConfigError(f"provider {name!r}: base_url must be smtp://host:port or smtps://host:port")
        username, password = settings.extra("username"), settings.extra("password")
        if bool(username) != bool(password):
            raise ConfigError(f"provider {name!r} (smtp) needs both username and password, or neither")
        starttls = settings.extra("starttls")
        if url.scheme == "smtps" and starttls:
            raise ConfigError(f"provider {name!r}: starttls is for smtp://, smtps:// is TLS already")
        self.name = name
        self._from = sender
        self._domain = sender.rpartition("@")[2] or "localhost"
        self._connect_s = settings.connect_timeout_ms / 1000
        self._read_s = settings.read_timeout_ms / 1000
        self._client = aiosmtplib.SMTP(
            hostname=url.host,
            port=url.explicit_port,
            username=username,
            password=password,
            use_tls=url.scheme == "smtps",
            start_tls=None if starttls is None else bool(starttls),
            validate_certs=bool(settings.extra("validate_certs", True)),
            cert_bundle=settings.extra("cert_bundle"),
            local_hostname=settings.extra("local_hostname"),
            timeout=self._read_s,
        )
        self._lock = asyncio.Lock()

    def _content(self, message: Message) -> tuple[str, bytes]:
        """The message's Message-ID and its bytes as sent."""
        email = EmailMessage()
        message_id = make_msgid(domain=self._domain)
        try:
            email["From"] = self._from
            email["To"] = message.to
            email["Subject"] = message.subject or ""
            email["Date"] = formatdate()
            email["Message-ID"] = message_id
            email.set_content(message.body)
            if message.html:
                email.add_alternative(message.html, subtype="html")
            return message_id, email.as_bytes(policy=SMTP_POLICY)
        except (ValueError, TypeError) as exc:
            raise ProviderError(
                ErrorKind.PERMANENT, f"cannot build the email: {exc}", code="invalid_message"
            ) from None

    async def _connect(self) -> None:
        try:
            await self._client.connect(timeout=self._connect_s)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ProviderError(
                ErrorKind.PERMANENT,
                f"smtp {exc.code}: {exc.message} (check providers.{self.name}.username and password)",
                code=AUTH_ERROR,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise ProviderError(
                    ErrorKind.TRANSIENT, f"smtp server busy: {exc.code} {exc.message}"
                ) from None
            raise ProviderError(
                ErrorKind.PERMANENT, f"smtp server refused us: {exc.code} {exc.message}", code=AUTH_ERROR
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            if _tls_failure(exc):
                hint = f"(check providers.{self.name}.validate_certs and cert_bundle)"
                raise ProviderError(
                    ErrorKind.PERMANENT, f"smtp TLS failed: {exc} {hint}", code=AUTH_ERROR
                ) from None
            if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
                raise ProviderError(ErrorKind.PERMANENT, f"smtp: {exc}", code=AUTH_ERROR) from None
            raise ProviderError(ErrorKind.TRANSIENT, f"cannot connect to smtp server: {exc}") from None

    async def _mail_from(self) -> None:
        """MAIL FROM on the pooled connection, reopening it once if the server had dropped it."""
        reused = self._client.is_connected
        if not reused:
            await self._connect()
        try:
            await self._client.mail(self._from, timeout=self._read_s)
        except _NO_ANSWER:
            if not reused:
                raise
            await self._connect()
            await self._client.mail(self._from, timeout=self._read_s)

    async def send(self, message: Message) -> SendResult:
        """Deliver one email to the server; return its Message-ID or raise a classified ProviderError."""
        if message.channel != "email":
            raise ProviderError(
                ErrorKind.PERMANENT, f"smtp cannot send {message.channel!r} messages", code="channel"
            )
        message_id, content = self._content(message)
        async with self._lock:
            try:
                await self._mail_from()
            except aiosmtplib.SMTPSenderRefused as exc:
                await self._reset()
                if 400 <= exc.code < 500:
                    raise _reply_error(exc, message.to) from None
                hint = f"(check providers.{self.name}.from)"
                raise ProviderError(
                    ErrorKind.PERMANENT,
                    f"smtp refused our sender: {exc.code} {exc.message} {hint}",
                    code=AUTH_ERROR,
                ) from None
            except _NO_ANSWER as exc:
                raise ProviderError(ErrorKind.TRANSIENT, f"smtp connection lost before DATA: {exc}") from None
            try:
                await self._client.rcpt(message.to, timeout=self._read_s)
            except UnicodeEncodeError:
                await self._reset()
                raise ProviderError(
                    ErrorKind.PERMANENT,
                    "the server does not take non-ASCII addresses",
                    code="invalid_address",
                ) from None
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                raise _reply_error(exc, message.to) from None
            except _NO_ANSWER as exc:
                raise ProviderError(ErrorKind.TRANSIENT, f"smtp connection lost before DATA: {exc}") from None
            try:
                response = await self._client.data(content, timeout=self._read_s)
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                raise _reply_error(exc, message.to) from None
            except _NO_ANSWER as exc:
                raise ProviderError(
                    ErrorKind.IN_DOUBT, f"no answer from the smtp server after DATA: {exc}"
                ) from None
        return SendResult(message_id, details={"response": response.message})

    async def _reset(self) -> None:
        """Abandon the transaction so the pooled connection can carry the next one."""
        if self._client.is_connected:
            try:
                await self._client.rset(timeout=self._read_s)
            except (aiosmtplib.SMTPException, OSError):
                self._client.close()

    async def close(self) -> None:
        """QUIT the pooled connection, if open."""
        async with self._lock:
            if self._client.is_connected:
                try:
                    await self._client.quit(timeout=self._read_s)
                except (aiosmtplib.SMTPException, OSError):
                    self._client.close()
