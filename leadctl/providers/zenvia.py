"""Zenvia API v2: ``POST {base_url}/v2/channels/{sms|whatsapp}/messages`` with ``X-API-TOKEN``.

Configuration (``providers.<name>``): ``api_token``, ``from`` (the sender id Zenvia shows for the
channel: an SMS alias or the WhatsApp number; use one provider entry per channel when they differ),
``base_url`` (default ``https://api.zenvia.com``). The body is ``{"from", "to", "contents": [{"type":
"text", "text"}]}`` with ``to`` the E.164 digits without ``+``; the message id stored is Zenvia's ``id``.

Errors follow Zenvia's table: 400 ``VALIDATION_ERROR`` (and 404 ``NOT_FOUND``, 409 ``DUPLICATED``) are
permanent, with the error's ``details`` in the message; 401 ``AUTHENTICATION_ERROR`` stops the worker
(code ``"auth"``); 429 and 5xx (``INTERNAL_ERROR``) are transient, 504 in doubt. Zenvia reports
delivery failures and opt-outs asynchronously (status webhooks), never in the send's answer.
"""

from __future__ import annotations

import aiohttp
import orjson

from leadctl.config import ProviderSettings
from leadctl.masking import mask_phone
from leadctl.providers import http
from leadctl.providers.base import ErrorKind, Message, ProviderError, SendResult

DEFAULT_BASE_URL = "https://api.zenvia.com"


class ZenviaProvider:
    """One Zenvia API token and sender, sending SMS and WhatsApp text messages."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        token, sender = http.required(name, "zenvia", settings, "api_token", "from")
        base = http.base_url(name, settings, DEFAULT_BASE_URL)
        self.name = name
        self._session = session
        self._sender = sender
        self._urls = {
            channel: base / "v2" / "channels" / channel / "messages" for channel in ("sms", "whatsapp")
        }
        self._headers = {**http.JSON_HEADERS, "X-API-TOKEN": token}
        self._timeout = http.client_timeout(settings)

    async def send(self, message: Message) -> SendResult:
        """POST one message; return Zenvia's id or raise a classified ProviderError."""
        url = self._urls.get(message.channel)
        if url is None:
            raise ProviderError(
                ErrorKind.PERMANENT, f"zenvia cannot send {message.channel!r} messages", code="channel"
            )
        to = message.to.removeprefix("+")
        contents = [{"type": "text", "text": message.body}]
        body = orjson.dumps({"from": self._sender, "to": to, "contents": contents})
        reply = await http.post(self._session, url, body, self._headers, self._timeout, "zenvia")
        if reply.status < 300:
            message_id = http.json_object(reply.body).get("id")
            if not message_id:
                raise ProviderError(
                    ErrorKind.IN_DOUBT, f"zenvia answered {reply.status} without a message id"
                )
            return SendResult(str(message_id))
        raise self._error(reply, to)

    def _error(self, reply: http.Reply, to: str) -> ProviderError:
        """Classify a non-2xx answer by status and Zenvia's error code; the recipient is masked."""
        error = http.json_object(reply.body)
        code = str(error["code"]) if error.get("code") else None
        text = str(error.get("message") or f"HTTP {reply.status}")
        details = error.get("details")
        if isinstance(details, list) and details:
            text += ": " + "; ".join(
                f"{d.get('path', '?')}: {d.get('message', '')}" if isinstance(d, dict) else str(d)
                for d in details
            )
        summary = f"zenvia {reply.status} {code or '-'}: {text.replace(to, mask_phone(to))}"
        return http.classify_status(
            reply.status,
            summary,
            code=code,
            retry_after=http.retry_after(reply.headers.get("Retry-After")),
            auth_hint=f"(check providers.{self.name}.api_token)",
        )
