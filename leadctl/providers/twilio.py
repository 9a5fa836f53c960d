"""Twilio Programmable Messaging: SMS and WhatsApp through the 2010-04-01 Messages resource.

Configuration (``providers.<name>``): ``account_sid``, ``auth_token``, and ``from`` or
``messaging_service_sid``; ``base_url`` defaults to ``https://api.twilio.com``.

Failures are classified for the worker: 4xx is permanent (21610 also sets ``opted_out``), except
429 / 20429 which is transient with the ``Retry-After`` delay; 5xx is transient, except 504 (a gateway
gave up waiting for Twilio, exactly like our own read timeout) which is in doubt. Bad credentials are
permanent with code ``"auth"`` whatever the provider, so a worker can stop instead of failing every lead.
A connection that never opened is transient; a read timeout or a connection lost after the request
was written is in doubt. aiohttp never retries a POST by itself, so one ``send`` is at most one request.
"""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import aiohttp
import orjson
from yarl import URL

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.masking import mask_contact
from leadctl.providers.base import AUTH_ERROR, Message, ProviderError, SendResult

DEFAULT_BASE_URL = "https://api.twilio.com"
_OPTED_OUT = "21610"
_RATE_LIMITED = "20429"
_FORM = "application/x-www-form-urlencoded"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the HTTP-date form is not used by Twilio)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


class TwilioProvider:
    """One Twilio account, sending over the worker process's shared aiohttp session."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        account_sid = settings.extra("account_sid")
        auth_token = settings.extra("auth_token")
        service_sid = settings.extra("messaging_service_sid")
        if not account_sid or not auth_token:
            raise ConfigError(f"provider {name!r} (twilio) needs account_sid and auth_token")
        if not settings.from_ and not service_sid:
            raise ConfigError(f"provider {name!r} (twilio) needs 'from' or messaging_service_sid")
        base = URL(settings.base_url or DEFAULT_BASE_URL)
        if not base.is_absolute() or base.scheme not in ("http", "https"):
            raise ConfigError(f"provider {name!r}: base_url must be an http(s) URL")
        self.name = name
        self._session = session
        self._url = base / "2010-04-01" / "Accounts" / str(account_sid) / "Messages.json"
        token = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": _FORM}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_ms / 1000,
            sock_read=settings.read_timeout_ms / 1000,
        )
        # channel -> (prefix for To, the encoded sender field), built once.
        if service_sid:
            sender = f"MessagingServiceSid={quote_plus(str(service_sid))}"
            self._senders = {"sms": ("", sender), "whatsapp": ("whatsapp:", sender)}
        else:
            sender_from = settings.from_ or ""
            self._senders = {
                "sms": ("", f"From={quote_plus(sender_from)}"),
                "whatsapp": ("whatsapp:", f"From={quote_plus('whatsapp:' + sender_from)}"),
            }

    async def send(self, message: Message) -> SendResult:
        """POST one message; return its SID or raise a classified ProviderError."""
        sender = self._senders.get(message.channel)
        if sender is None:
            raise ProviderError(
                "permanent", f"twilio cannot send {message.channel!r} messages", code="channel"
            )
        prefix, sender_field = sender
        form = f"To={quote_plus(prefix + message.to)}&{sender_field}&Body={quote_plus(message.body)}"
        try:
            async with self._session.post(
                self._url, data=form.encode(), headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
                raw = await response.read()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ProviderError("transient", f"cannot connect to twilio: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:  # read timeouts are OSError (TimeoutError) too
            reason = str(exc) or type(exc).__name__
            raise ProviderError("in_doubt", f"no answer from twilio after sending: {reason}") from None
        if status < 300:
            try:
                return SendResult(orjson.loads(raw)["sid"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ProviderError("in_doubt", f"twilio answered {status} without a message sid") from None
        raise self._error(status, raw, retry_after, message.to)

    def _error(self, status: int, raw: bytes, retry_after: str | None, to: str) -> ProviderError:
        """Classify a non-2xx answer; the recipient is masked in the error text."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            body = {}
        code = str(body["code"]) if body.get("code") is not None else None
        text = str(body.get("message") or f"HTTP {status}").replace(to, mask_contact(to))
        summary = f"twilio {status} {code or '-'}: {text}"
        if status == 429 or code == _RATE_LIMITED:
            return ProviderError("transient", summary, code=code, retry_after=_retry_after(retry_after))
        if status == 401:
            hint = f"{summary} (check providers.{self.name}.account_sid and auth_token)"
            return ProviderError("permanent", hint, code=AUTH_ERROR)
        if status == 504:
            return ProviderError("in_doubt", summary, code=code)
        if status >= 500:
            return ProviderError("transient", summary, code=code, retry_after=_retry_after(retry_after))
        return ProviderError("permanent", summary, code=code, opted_out=code == _OPTED_OUT)
