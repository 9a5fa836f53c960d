"""Twilio SendGrid v3 Mail Send: ``POST {base_url}/v3/mail/send`` with a Bearer API key.

Configuration (``providers.<name>``): ``api_key``, ``from`` (a verified sender address), optional
``from_name``, ``base_url`` (default ``https://api.sendgrid.com``). SendGrid answers 202 with the
message id in the ``X-Message-Id`` header and no body.

``send_many`` packs up to 1,000 emails in one request, one personalization each: its own ``to``,
``subject``, the lead's rendered text and html as substitutions of a shared ``content``, and the
lead id as a custom arg (so event webhooks can be matched to leads). Every email of a request gets
the request's ``X-Message-Id``. When SendGrid refuses a request (400) for some personalizations
only (errors whose ``field`` is ``personalizations.N...``), those fail and the rest is sent again.

Errors (``{"errors": [{"message", "field"}]}``): 400 and 413 are permanent; 401 / 403 stop the worker
(code ``"auth"``); 429 is transient, retried after ``X-RateLimit-Reset`` (epoch seconds); 5xx is
transient, 504 in doubt.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import orjson

from leadctl.config import ProviderSettings
from leadctl.masking import mask_email
from leadctl.providers import http
from leadctl.providers.base import ErrorKind, Message, ProviderError, SendResult

DEFAULT_BASE_URL = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTIONS_BYTES = 50_000  # per personalization
MAX_REQUEST_BYTES = 20_000_000
_TEXT_TAG = "-leadctl-text-"
_HTML_TAG = "-leadctl-html-"
_FIELD = re.compile(r"^personalizations\.(\d+)\b")


@dataclass
class _Batch:
    """Messages (by index) that go in one request: same shape, distinct recipients."""

    indices: list[int] = field(default_factory=list)
    emails: set[str] = field(default_factory=set)
    size: int = 0


def _errors(raw: bytes) -> list[dict[str, Any]]:
    errors = http.json_object(raw).get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


class SendGridProvider:
    """One SendGrid API key and sender address."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        api_key, sender = http.required(name, "sendgrid", settings, "api_key", "from")
        self.name = name
        self._session = session
        self._url = http.base_url(name, settings, DEFAULT_BASE_URL) / "v3" / "mail" / "send"
        self._headers = {**http.JSON_HEADERS, "Authorization": f"Bearer {api_key}"}
        self._timeout = http.client_timeout(settings)
        from_name = settings.extra("from_name")
        self._from = {"email": sender, **({"name": str(from_name)} if from_name else {})}

    # -- one message ---------------------------------------------------------------------------

    async def send(self, message: Message) -> SendResult:
        """POST one email; return its X-Message-Id or raise a classified ProviderError."""
        if message.channel != "email":
            raise ProviderError(
                ErrorKind.PERMANENT, f"sendgrid cannot send {message.channel!r} messages", code="channel"
            )
        content = [{"type": "text/plain", "value": message.body}]
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        payload = {
            "personalizations": [
                {"to": [{"email": message.to}], "custom_args": {"lead_id": str(message.lead_id)}}
            ],
            "from": self._from,
            "subject": message.subject or "",
            "content": content,
        }
        reply = await self._post(payload)
        if reply.status < 300:
            return SendResult(self._message_id(reply))
        raise self._error(reply, [message.to])

    # -- many messages -------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[Message]) -> list[SendResult | ProviderError]:
        """Send ``messages`` in as few requests as SendGrid allows; one outcome per message, in order."""
        results: list[SendResult | ProviderError | None] = [None] * len(messages)
        batches: list[_Batch] = []
        open_batches: dict[bool, _Batch] = {}
        singles: list[int] = []
        for index, message in enumerate(messages):
            if message.channel != "email":
                results[index] = ProviderError(
                    ErrorKind.PERMANENT, f"sendgrid cannot send {message.channel!r} messages", code="channel"
                )
                continue
            size = len(message.body.encode()) + len((message.html or "").encode())
            if size > MAX_SUBSTITUTIONS_BYTES:
                singles.append(index)
                continue
            batch = open_batches.get(message.html is not None)
            if (
                batch is None
                or len(batch.indices) >= MAX_PERSONALIZATIONS
                or message.to in batch.emails
                or batch.size + size > MAX_REQUEST_BYTES
            ):
                batch = open_batches[message.html is not None] = _Batch()
                batches.append(batch)
            batch.indices.append(index)
            batch.emails.add(message.to)
            batch.size += size

        async def one(index: int) -> None:
            try:
                results[index] = await self.send(messages[index])
            except ProviderError as exc:
                results[index] = exc

        await asyncio.gather(
            *(self._send_batch(messages, batch.indices, results) for batch in batches),
            *(one(index) for index in singles),
        )
        return cast(list[SendResult | ProviderError], results)  # every slot is filled by now

    async def _send_batch(
        self,
        messages: Sequence[Message],
        indices: list[int],
        results: list[SendResult | ProviderError | None],
    ) -> None:
        """One request for ``indices``; on a 400 naming some personalizations, fail them, resend the rest."""
        batch = [messages[i] for i in indices]
        with_html = batch[0].html is not None
        content = [{"type": "text/plain", "value": _TEXT_TAG}]
        if with_html:
            content.append({"type": "text/html", "value": _HTML_TAG})
        personalizations = []
        for message in batch:
            substitutions = {_TEXT_TAG: message.body}
            if with_html:
                substitutions[_HTML_TAG] = message.html or ""
            personalizations.append(
                {
                    "to": [{"email": message.to}],
                    "subject": message.subject or "",
                    "substitutions": substitutions,
                    "custom_args": {"lead_id": str(message.lead_id)},
                }
            )
        payload = {"personalizations": personalizations, "from": self._from, "content": content}
        try:
            reply = await self._post(payload)
        except ProviderError as exc:
            for i in indices:
                results[i] = exc
            return
        if reply.status < 300:
            try:
                message_id = self._message_id(reply)
            except ProviderError as exc:
                for i in indices:
                    results[i] = exc
                return
            for position, i in enumerate(indices):
                results[i] = SendResult(message_id, details={"batch": len(indices), "position": position})
            return
        contacts = [message.to for message in batch]
        bad = self._refused_positions(reply, len(batch))
        if not bad:
            error = self._error(reply, contacts)
            for i in indices:
                results[i] = error
            return
        for position, errors in bad.items():
            results[indices[position]] = self._permanent(reply.status, errors, [contacts[position]])
        rest = [i for position, i in enumerate(indices) if position not in bad]
        if rest:
            await self._send_batch(messages, rest, results)

    def _refused_positions(self, reply: http.Reply, count: int) -> dict[int, list[dict[str, Any]]]:
        """For a 400 that blames only some personalizations: their positions and errors, else {}."""
        if reply.status != 400:
            return {}
        blamed: dict[int, list[dict[str, Any]]] = {}
        for error in _errors(reply.body):
            found = _FIELD.match(str(error.get("field") or ""))
            if found is None or int(found.group(1)) >= count:
                return {}
            blamed.setdefault(int(found.group(1)), []).append(error)
        return blamed if len(blamed) < count else {}

    # -- shared --------------------------------------------------------------------------------

    async def _post(self, payload: dict[str, Any]) -> http.Reply:
        return await http.post(
            self._session, self._url, orjson.dumps(payload), self._headers, self._timeout, "sendgrid"
        )

    @staticmethod
    def _message_id(reply: http.Reply) -> str:
        message_id = reply.headers.get("X-Message-Id")
        if not message_id:
            raise ProviderError(ErrorKind.IN_DOUBT, f"sendgrid answered {reply.status} without X-Message-Id")
        return message_id

    @staticmethod
    def _summary(status: int, errors: list[dict[str, Any]], contacts: list[str]) -> str:
        text = "; ".join(
            f"{e['field']}: {e.get('message', '')}" if e.get("field") else str(e.get("message", ""))
            for e in errors
        )
        for contact in contacts:
            text = text.replace(contact, mask_email(contact))
        return f"sendgrid {status}: {text or f'HTTP {status}'}"

    def _permanent(self, status: int, errors: list[dict[str, Any]], contacts: list[str]) -> ProviderError:
        return ProviderError(ErrorKind.PERMANENT, self._summary(status, errors, contacts), code=str(status))

    def _error(self, reply: http.Reply, contacts: list[str]) -> ProviderError:
        """Classify a non-2xx answer; recipients are masked in the error text."""
        summary = self._summary(reply.status, _errors(reply.body), contacts)
        retry_after = http.retry_after(reply.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = http.seconds_until(reply.headers.get("X-RateLimit-Reset"))
        return http.classify_status(
            reply.status,
            summary,
            code=str(reply.status),
            retry_after=retry_after,
            auth_hint=f"(check providers.{self.name}.api_key and the sender identity)",
        )
