"""WhatsApp Business Cloud API (Meta Graph API): ``POST {base_url}/{version}/{phone_number_id}/messages``.

Configuration (``providers.<name>``): ``access_token`` (a system-user token, sent as Bearer),
``phone_number_id``, ``api_version`` (default ``v23.0``), ``base_url`` (default
``https://graph.facebook.com``) and, for marketing outside the 24-hour window, an approved template::

    template: {name: oferta_bf, language: pt_BR, body_params: [name, cidade]}

``body_params`` names the lead fields filling the template body's ``{{1}}``, ``{{2}}``...; without a
template the rendered text goes as a text message. ``to`` is the E.164 digits without ``+``. The
message id stored is the ``wamid``; ``details`` holds the ``wa_id`` Meta resolved the number to.

Errors are read from Meta's ``error.code`` (Graph API / Cloud API error codes): 131050 (the user
stopped marketing messages) is permanent and opted out; 131026 (undeliverable), 131047 (outside the
re-engagement window), 100 and 132xxx (template and parameter errors) and other request errors are
permanent; 130429 (throughput), 131056 (pair rate limit), 131048 (spam rate limit), 4 / 80007 (API
rate limits), 1 / 2 / 131000 / 131016 / 131057 / 133004 (service trouble) are transient; 190 (token
expired), 0 / 3 / 10 / 200-299 (permissions), 131031 (account locked) and 131042 (payment) stop the
worker with code ``"auth"``: no lead is at fault. Without a known code the HTTP status decides.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from leadctl.config import ProviderSettings
from leadctl.errors import ConfigError
from leadctl.masking import mask_phone
from leadctl.providers import http
from leadctl.providers.base import AUTH_ERROR, ErrorKind, Message, ProviderError, SendResult, lead_fields

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v23.0"
OPTED_OUT = 131050
TRANSIENT = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056, 131057, 133004})
STOP = frozenset({0, 3, 10, 190, 131031, 131042, *range(200, 300)})


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _template(name: str, settings: ProviderSettings) -> tuple[dict[str, Any], list[str]] | None:
    """The configured template's fixed part and the lead fields of its body parameters."""
    template = settings.extra("template")
    if template is None:
        return None
    if not isinstance(template, dict) or not template.get("name") or not template.get("language"):
        raise ConfigError(f"provider {name!r}: template needs name and language")
    params = template.get("body_params") or []
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise ConfigError(f"provider {name!r}: template.body_params must be a list of lead fields")
    return {"name": str(template["name"]), "language": {"code": str(template["language"])}}, params


class WhatsAppCloudProvider:
    """One WhatsApp Business phone number, sending over the worker process's shared session."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        token, number_id = http.required(name, "whatsapp_cloud", settings, "access_token", "phone_number_id")
        version = str(settings.extra("api_version") or DEFAULT_VERSION)
        self.name = name
        self._session = session
        self._url = http.base_url(name, settings, DEFAULT_BASE_URL) / version / number_id / "messages"
        self._headers = {**http.JSON_HEADERS, "Authorization": f"Bearer {token}"}
        self._timeout = http.client_timeout(settings)
        self._template = _template(name, settings)

    def _payload(self, message: Message, to: str) -> dict[str, Any]:
        if self._template is None:
            text = {"preview_url": False, "body": message.body}
            return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": text}
        fixed, params = self._template
        template: dict[str, Any] = dict(fixed)
        if params:
            parameters = [{"type": "text", "text": value} for value in lead_fields(message, params)]
            template["components"] = [{"type": "body", "parameters": parameters}]
        return {"messaging_product": "whatsapp", "to": to, "type": "template", "template": template}

    async def send(self, message: Message) -> SendResult:
        """POST one message; return its wamid or raise a classified ProviderError."""
        if message.channel != "whatsapp":
            raise ProviderError(
                ErrorKind.PERMANENT,
                f"whatsapp_cloud cannot send {message.channel!r} messages",
                code="channel",
            )
        to = message.to.removeprefix("+")
        body = orjson.dumps(self._payload(message, to))
        reply = await http.post(
            self._session, self._url, body, self._headers, self._timeout, "whatsapp_cloud"
        )
        if reply.status < 300:
            answer = http.json_object(reply.body)
            try:
                wamid = str(answer["messages"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise ProviderError(
                    ErrorKind.IN_DOUBT, f"whatsapp_cloud answered {reply.status} without a message id"
                ) from None
            contacts = answer.get("contacts") or [None]
            wa_id = _dict(contacts[0]).get("wa_id")
            return SendResult(wamid, details={"wa_id": wa_id})
        raise self._error(reply, to)

    def _error(self, reply: http.Reply, to: str) -> ProviderError:
        """Classify a non-2xx answer by Meta's error code; the recipient is masked."""
        error = _dict(http.json_object(reply.body).get("error"))
        code = error.get("code")
        code_text = str(code) if code is not None else None
        text = str(error.get("message") or f"HTTP {reply.status}")
        details = _dict(error.get("error_data")).get("details")
        if details and str(details) not in text:
            text = f"{text} ({details})"
        summary = f"whatsapp_cloud {reply.status} {code_text or '-'}: {text.replace(to, mask_phone(to))}"
        retry_after = http.retry_after(reply.headers.get("Retry-After"))
        if code == OPTED_OUT:
            return ProviderError(ErrorKind.PERMANENT, summary, code=code_text, opted_out=True)
        if code in TRANSIENT:
            return ProviderError(ErrorKind.TRANSIENT, summary, code=code_text, retry_after=retry_after)
        if code in STOP:
            hint = f"{summary} (check providers.{self.name}.access_token and the WhatsApp account)"
            return ProviderError(ErrorKind.PERMANENT, hint, code=AUTH_ERROR)
        return http.classify_status(
            reply.status,
            summary,
            code=code_text,
            retry_after=retry_after,
            auth_hint=f"(check providers.{self.name}.access_token)",
        )
