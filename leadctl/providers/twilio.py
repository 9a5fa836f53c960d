"""Twilio Programmable Messaging: SMS and WhatsApp through the 2010-04-01 Messages resource.

Configuration (``providers.<name>``): ``account_sid``, ``auth_token``, and ``from`` or
``messaging_service_sid``; ``base_url`` defaults to ``https://api.twilio.com``. WhatsApp template
messages: ``content_sid`` (an approved Content template, ``HX...``) and ``content_variables``, a
mapping of the template's variable keys to lead fields (``{"1": name, "2": cidade}``); WhatsApp
messages then carry ``ContentSid`` + ``ContentVariables`` instead of ``Body``. Numbers keep the ``+``.

Failures are classified for the worker: 4xx is permanent (21610 also sets ``opted_out``), except
429 / 20429 which is transient with the ``Retry-After`` delay; 5xx is transient, except 504 which is
in doubt; 401 is permanent with code ``"auth"``. A lead lacking a template variable's field fails
without a request (code ``template_field``). Connection failures: see ``leadctl.providers.http``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import quote_plus

import aiohttp
import orjson

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.masking import mask_contact
from leadctl.providers import http
from leadctl.providers.base import ErrorKind, Message, ProviderError, SendResult, lead_fields

DEFAULT_BASE_URL = "https://api.twilio.com"

_OPTED_OUT = "21610"
_RATE_LIMITED = "20429"
_FORM = "application/x-www-form-urlencoded"


def _form_value(value: str) -> str:
    """``quote_plus(value)``, with an E.164 number (the ``To`` of nearly every request) encoded
    without quote_plus's per-character work."""
    if value[:1] == "+" and value[1:].isdigit() and value.isascii():
        return "%2B" + value[1:]
    return quote_plus(value)


class TwilioProvider:
    """One Twilio account, sending over the worker process's shared aiohttp session."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        account_sid, auth_token = http.required(name, "twilio", settings, "account_sid", "auth_token")
        service_sid = settings.extra("messaging_service_sid")
        if not settings.from_ and not service_sid:
            raise ConfigError(f"provider {name!r} (twilio) needs 'from' or messaging_service_sid")
        content_sid = settings.extra("content_sid")
        variables = settings.extra("content_variables") or {}
        if not isinstance(variables, Mapping) or not all(isinstance(v, str) for v in variables.values()):
            raise ConfigError(f"provider {name!r}: content_variables must map template keys to lead fields")
        self.name = name
        self._session = session
        base = http.base_url(name, settings, DEFAULT_BASE_URL)
        self._url = base / "2010-04-01" / "Accounts" / account_sid / "Messages.json"
        token = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": _FORM}
        self._timeout = http.client_timeout(settings)
        self._content = f"ContentSid={quote_plus(str(content_sid))}" if content_sid else None
        self._variable_keys = [str(key) for key in variables]
        self._variable_fields = list(variables.values())
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

    def _content_fields(self, message: Message) -> str:
        if self._content is None or message.channel != "whatsapp":
            return f"Body={quote_plus(message.body)}"
        values = lead_fields(message, self._variable_fields)
        variables = orjson.dumps(dict(zip(self._variable_keys, values, strict=True))).decode()
        return f"{self._content}&ContentVariables={quote_plus(variables)}"

    async def send(self, message: Message) -> SendResult:
        """POST one message; return its SID or raise a classified ProviderError."""
        sender = self._senders.get(message.channel)
        if sender is None:
            raise ProviderError(
                ErrorKind.PERMANENT, f"twilio cannot send {message.channel!r} messages", code="channel"
            )
        prefix, sender_field = sender
        form = f"To={_form_value(prefix + message.to)}&{sender_field}&{self._content_fields(message)}"
        reply = await http.post(
            self._session, self._url, form.encode(), self._headers, self._timeout, "twilio"
        )
        if reply.status < 300:
            try:
                resource = orjson.loads(reply.body)
                sid = resource["sid"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ProviderError(
                    ErrorKind.IN_DOUBT, f"twilio answered {reply.status} without a message sid"
                ) from None
            segments = resource.get("num_segments")
            count = int(segments) if message.channel == "sms" and str(segments).isdigit() else None
            return SendResult(sid, segments=count)
        raise self._error(reply, message.to)

    def _error(self, reply: http.Reply, to: str) -> ProviderError:
        """Classify a non-2xx answer; the recipient is masked in the error text."""
        body = http.json_object(reply.body)
        code = str(body["code"]) if body.get("code") is not None else None
        text = str(body.get("message") or f"HTTP {reply.status}").replace(to, mask_contact(to))
        summary = f"twilio {reply.status} {code or '-'}: {text}"
        retry_after = http.retry_after(reply.headers.get("Retry-After"))
        if code == _RATE_LIMITED:
            return ProviderError(ErrorKind.TRANSIENT, summary, code=code, retry_after=retry_after)
        error = http.classify_status(
            reply.status,
            summary,
            code=code,
            retry_after=retry_after,
            auth_hint=f"(check providers.{self.name}.account_sid and auth_token)",
            auth_statuses=(401,),
        )
        error.opted_out = code == _OPTED_OUT
        return error
