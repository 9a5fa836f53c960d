"""Webhook: POST each rendered message as JSON to an in-house gateway.

Configuration (``providers.<name>``): ``url``; ``headers`` sent with every request (e.g.
``Authorization: "Bearer ${GATEWAY_TOKEN}"``); where the gateway's id for the message is: ``id_field``
(a JSON field of the answer, dotted for nested: ``data.id``) or ``id_header`` (a response header),
else ``webhook-<lead_id>``. The body is ``{"lead_id", "channel", "to", "body", "subject", "html",
"fields"}`` with ``to`` as stored (E.164 with ``+``, or the email).

Any 2xx is success; 401 / 403 stop the worker (code ``"auth"``); 429 (honouring ``Retry-After``) and
5xx are transient, 504 in doubt; any other 4xx is permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.masking import mask_contact
from leadctl.providers import http
from leadctl.providers.base import Message, SendResult


def _field(answer: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(answer, dict):
            return None
        answer = answer.get(part)
    return answer


class WebhookProvider:
    """One gateway URL and its headers."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        (url,) = http.required(name, "webhook", settings, "url")
        self._url = URL(url)
        if not self._url.is_absolute() or self._url.scheme not in ("http", "https"):
            raise ConfigError(f"provider {name!r}: url must be an http(s) URL")
        headers = settings.extra("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigError(f"provider {name!r}: headers must be a mapping of header names to values")
        self.name = name
        self._session = session
        self._headers = {**http.JSON_HEADERS, **{str(k): str(v) for k, v in headers.items()}}
        self._timeout = http.client_timeout(settings)
        id_field = settings.extra("id_field")
        self._id_path = str(id_field).split(".") if id_field else None
        self._id_header = settings.extra("id_header")

    async def send(self, message: Message) -> SendResult:
        """POST one message; return the gateway's id for it or raise a classified ProviderError."""
        fields = message.fields if isinstance(message.fields, dict) else dict(message.fields)
        body = orjson.dumps(
            {
                "lead_id": message.lead_id,
                "channel": message.channel,
                "to": message.to,
                "body": message.body,
                "subject": message.subject,
                "html": message.html,
                "fields": fields,
            }
        )
        reply = await http.post(self._session, self._url, body, self._headers, self._timeout, "webhook")
        if reply.status < 300:
            return SendResult(self._message_id(reply, message.lead_id))
        answer = http.json_object(reply.body)
        text = str(answer.get("message") or answer.get("error") or f"HTTP {reply.status}")
        summary = f"webhook {reply.status}: {text.replace(message.to, mask_contact(message.to))}"
        raise http.classify_status(
            reply.status,
            summary,
            code=str(reply.status),
            retry_after=http.retry_after(reply.headers.get("Retry-After")),
            auth_hint=f"(check providers.{self.name}.headers)",
        )

    def _message_id(self, reply: http.Reply, lead_id: int) -> str:
        if self._id_header:
            found = reply.headers.get(self._id_header)
            if found:
                return found
        if self._id_path:
            found = _field(http.json_object(reply.body), self._id_path)
            if found is not None and found != "":
                return str(found)
        return f"webhook-{lead_id}"
