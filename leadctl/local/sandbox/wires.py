"""The sandbox's wire formats: how each fake provider checks, parses and answers a send.

A Wire holds no state. The sandbox server (``leadctl.local.sandbox.server``) counts, records and
injects faults; a wire only knows its provider's paths, credentials, request bodies, ids, answers,
error bodies and magic recipients (listed in the sandbox module's docstring).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from random import Random
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

from leadctl.send.segments import segments

SANDBOX_ACCOUNT_SID = "AC00000000000000000000000000000000"
SANDBOX_AUTH_TOKEN = "sandbox-auth-token"
SANDBOX_META_TOKEN = "sandbox-meta-token"
SANDBOX_PHONE_NUMBER_ID = "100000000000001"
SANDBOX_ZENVIA_TOKEN = "sandbox-zenvia-token"
SANDBOX_SENDGRID_KEY = "SG.sandbox-api-key"
SANDBOX_WEBHOOK_TOKEN = "sandbox-webhook-token"

_JSON = "application/json"
_TWILIO_API = "/2010-04-01/Accounts"
_DIGITS = re.compile(r"^[1-9][0-9]{7,14}$")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")

INVALID = "+15005550001"
UNREACHABLE = "+15005550002"
REGION = "+15005550003"
OPTED_OUT = "+15005550004"
PAIR_LIMITED = "+15005550005"
NOT_MOBILE = "+15005550009"
INVALID_EMAIL_LOCAL = "invalid"
MISSING_TEMPLATE = "missing_template"


class Accepted(NamedTuple):
    """One message a wire accepted: the recipient as sent, as a contact (E.164 / email), sender, text,
    and SendGrid's custom args (echoed in its event webhooks)."""

    to: str
    contact: str
    from_: str | None
    body: str
    custom_args: dict[str, str] | None = None


Parsed = list[Accepted] | web.Response


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type=_JSON, headers=headers)


def _load(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _hex_id(rng: Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(128):032x}"


class TwilioWire:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json``, Basic auth, a form, 201 + a Message resource."""

    name = "twilio"
    path = _TWILIO_API + "/{account_sid}/Messages.json"

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._magic = {
            INVALID: (21211, "The 'To' number {to} is not a valid phone number."),
            UNREACHABLE: (21612, "The 'To' phone number: {to}, is not currently reachable via SMS."),
            REGION: (
                21408,
                "Permission to send an SMS has not been enabled for the region indicated by the "
                "'To' number: {to}.",
            ),
            OPTED_OUT: (21610, "Attempt to send to unsubscribed recipient"),
            NOT_MOBILE: (21614, "'To' number {to} is not a valid mobile number"),
        }

    @staticmethod
    def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        payload = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return _json(status, payload, headers)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == self._auth

    def unauthorized(self) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
        return self.error(401, 20003, "Authentication Error - invalid username", headers)

    def rate_limited(self) -> web.Response:
        return self.error(429, 20429, "Too many requests. Please retry later.", {"Retry-After": "1"})

    def server_error(self) -> web.Response:
        return self.error(500, 20500, "Internal Server Error")

    def parse(self, request: web.Request, raw: bytes) -> Parsed:
        if request.match_info["account_sid"] != self.account_sid:
            return self.error(404, 20404, f"The requested resource {request.path} was not found")
        form: dict[str, str] = {}
        for pair in raw.decode("utf-8", "replace").split("&"):
            key, _, value = pair.partition("=")
            form[key] = unquote_plus(value)
        to, sender, service = form.get("To"), form.get("From"), form.get("MessagingServiceSid")
        body, content = form.get("Body"), form.get("ContentSid")
        if not to:
            return self.error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return self.error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if content:
            variables = form.get("ContentVariables", "{}")
            if _load(variables.encode()) is None:
                return self.error(400, 21656, "The ContentVariables Parameter is invalid.")
            body = f"{content} {variables}"
        if not body:
            return self.error(400, 21602, "Message body is required.")
        contact = to.removeprefix("whatsapp:")
        magic = self._magic.get(contact)
        if magic is not None or not _E164.match(contact):
            code, text = magic or self._magic[INVALID]
            return self.error(400, code, text.format(to=to))
        return [Accepted(to, contact, sender or None, body)]

    def ids(self, rng: Random, count: int) -> list[str]:
        return [_hex_id(rng, "SM") for _ in range(count)]

    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response:
        ((sid, item),) = items
        created = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        uri = f"{_TWILIO_API}/{self.account_sid}/Messages/{sid}"
        sms = not item.to.startswith("whatsapp:")
        payload = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": item.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": item.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(segments(item.body)) if sms else "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if item.from_ else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": item.to,
            "uri": f"{uri}.json",
        }
        return _json(201, payload)


class MetaWire:
    """WhatsApp Cloud API: ``POST /{version}/{phone_number_id}/messages``, Bearer, JSON, wamid ids."""

    name = "whatsapp_cloud"
    path = r"/{version:v\d+\.\d+}/{phone_number_id}/messages"

    def __init__(self) -> None:
        self._auth = f"Bearer {SANDBOX_META_TOKEN}"
        self._magic = {
            INVALID[1:]: (131026, "Message undeliverable", "Unable to deliver message."),
            UNREACHABLE[1:]: (
                131047,
                "Re-engagement message",
                "More than 24 hours have passed since the recipient last replied to the sender number.",
            ),
            OPTED_OUT[1:]: (
                131050,
                "Unable to deliver the message",
                "The user has stopped marketing messages.",
            ),
            PAIR_LIMITED[1:]: (
                131056,
                "(Business Account, Consumer Account) pair rate limit hit",
                "Too many messages sent from this phone number to the same phone number in a short period.",
            ),
        }

    @staticmethod
    def error(
        status: int,
        code: int,
        message: str,
        details: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
        if details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": details}
        error["fbtrace_id"] = "Asandbox0000000000000"
        return _json(status, {"error": error}, headers)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == self._auth

    def unauthorized(self) -> web.Response:
        return self.error(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def rate_limited(self) -> web.Response:
        details = "Cloud API message throughput has been reached."
        return self.error(429, 130429, "(#130429) Rate limit hit", details, {"Retry-After": "1"})

    def server_error(self) -> web.Response:
        return self.error(500, 131000, "(#131000) Something went wrong", "Something went wrong.")

    def parse(self, request: web.Request, raw: bytes) -> Parsed:
        number_id = request.match_info["phone_number_id"]
        if number_id != SANDBOX_PHONE_NUMBER_ID:
            return self.error(
                400, 100, f"Unsupported post request. Object with ID '{number_id}' does not exist.", None
            )
        body = _load(raw)
        if body is None or body.get("messaging_product") != "whatsapp":
            return self.error(400, 100, "(#100) Invalid parameter", "messaging_product must be whatsapp")
        to = str(body.get("to") or "")
        if not _DIGITS.match(to):
            return self.error(400, 100, "(#100) Invalid parameter", "to: the digits of the number, without +")
        if body.get("type") == "template":
            text = self._template_text(body.get("template"))
            if isinstance(text, web.Response):
                return text
        elif body.get("type") == "text" and isinstance(body.get("text"), dict) and body["text"].get("body"):
            text = str(body["text"]["body"])
        else:
            return self.error(400, 100, "(#100) Invalid parameter", "a text or template message is required")
        magic = self._magic.get(to)
        if magic is not None:
            code, title, details = magic
            return self.error(400, code, f"(#{code}) {title}", details)
        return [Accepted(to, "+" + to, SANDBOX_PHONE_NUMBER_ID, text)]

    def _template_text(self, template: Any) -> str | web.Response:
        if not isinstance(template, dict) or not template.get("name"):
            return self.error(400, 100, "(#100) Invalid parameter", "template.name is required")
        language = template.get("language")
        if not isinstance(language, dict) or not language.get("code"):
            return self.error(400, 100, "(#100) Invalid parameter", "template.language.code is required")
        if template["name"] == MISSING_TEMPLATE:
            details = f"template name ({template['name']}) does not exist in {language['code']}"
            return self.error(
                400, 132001, "(#132001) Template name does not exist in the translation", details
            )
        params = [
            str(parameter.get("text"))
            for component in template.get("components") or []
            if isinstance(component, dict) and component.get("type") == "body"
            for parameter in component.get("parameters") or []
            if isinstance(parameter, dict)
        ]
        return f"[{template['name']}/{language['code']}] " + " | ".join(params)

    def ids(self, rng: Random, count: int) -> list[str]:
        return [
            "wamid." + base64.urlsafe_b64encode(rng.getrandbits(240).to_bytes(30, "big")).decode()
            for _ in range(count)
        ]

    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response:
        ((wamid, item),) = items
        payload = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": item.to, "wa_id": item.to}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
        return _json(200, payload)


class ZenviaWire:
    """Zenvia v2: ``POST /v2/channels/{sms|whatsapp}/messages``, ``X-API-TOKEN``, JSON contents."""

    name = "zenvia"
    path = "/v2/channels/{channel:sms|whatsapp}/messages"

    @staticmethod
    def error(
        status: int, code: str, message: str, details: list[dict[str, str]] | None = None, **headers: str
    ) -> web.Response:
        payload: dict[str, Any] = {"code": code, "message": message}
        if details:
            payload["details"] = details
        return _json(status, payload, headers or None)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-API-TOKEN") == SANDBOX_ZENVIA_TOKEN

    def unauthorized(self) -> web.Response:
        return self.error(401, "AUTHENTICATION_ERROR", "No authorization token was found")

    def rate_limited(self) -> web.Response:
        return self.error(429, "TOO_MANY_REQUESTS", "Too many requests", **{"Retry-After": "1"})

    def server_error(self) -> web.Response:
        return self.error(500, "INTERNAL_ERROR", "Internal error")

    def _invalid(self, path: str, message: str) -> web.Response:
        detail = {"code": "INVALID_VALUE", "path": path, "message": message}
        return self.error(400, "VALIDATION_ERROR", "Validation error", [detail])

    def parse(self, request: web.Request, raw: bytes) -> Parsed:
        body = _load(raw)
        if body is None:
            return self._invalid("body", "must be a JSON object")
        sender, to, contents = body.get("from"), str(body.get("to") or ""), body.get("contents")
        if not sender:
            return self._invalid("from", "is required")
        if not _DIGITS.match(to):
            return self._invalid("to", "must be the phone number's digits, with country code, without +")
        if not isinstance(contents, list) or not contents:
            return self._invalid("contents", "must have at least one content")
        texts = [c.get("text") for c in contents if isinstance(c, dict) and c.get("type") == "text"]
        if len(texts) != len(contents) or not all(isinstance(t, str) and t for t in texts):
            return self._invalid("contents", "each content must be of type text with a text")
        if to == INVALID[1:]:
            return self._invalid("to", f"{to} is not a valid recipient")
        return [Accepted(to, "+" + to, str(sender), "\n".join(texts))]

    def ids(self, rng: Random, count: int) -> list[str]:
        return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]

    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response:
        ((message_id, item),) = items
        payload = {
            "id": message_id,
            "from": item.from_,
            "to": item.to,
            "direction": "OUT",
            "channel": request.match_info["channel"],
            "contents": [{"type": "text", "text": item.body}],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        return _json(200, payload)


class SendGridWire:
    """SendGrid v3: ``POST /v3/mail/send``, Bearer, personalizations (substitutions), 202 + X-Message-Id."""

    name = "sendgrid"
    path = "/v3/mail/send"

    @staticmethod
    def error(
        status: int, errors: list[tuple[str | None, str]], headers: dict[str, str] | None = None
    ) -> web.Response:
        payload = {
            "errors": [{"field": field, "message": message, "help": None} for field, message in errors]
        }
        return _json(status, payload, headers)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SANDBOX_SENDGRID_KEY}"

    def unauthorized(self) -> web.Response:
        return self.error(401, [(None, "The provided authorization grant is invalid, expired, or revoked")])

    def rate_limited(self) -> web.Response:
        reset = str(int(time.time()) + 1)
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        return self.error(429, [(None, "too many requests")], headers)

    def server_error(self) -> web.Response:
        return self.error(500, [(None, "internal server error")])

    def parse(self, request: web.Request, raw: bytes) -> Parsed:
        body = _load(raw)
        if body is None:
            return self.error(400, [(None, "Bad Request")])
        personalizations = body.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return self.error(400, [("personalizations", "You must have at least one personalization.")])
        if len(personalizations) > 1000:
            message = (
                "The personalization block is limited to 1000 personalizations per API request. "
                f"You have provided {len(personalizations)} personalizations."
            )
            return self.error(400, [("personalizations", message)])
        sender = body.get("from")
        if not isinstance(sender, dict) or not sender.get("email"):
            return self.error(400, [("from.email", "The from email does not contain a valid address.")])
        content = {c.get("type"): c.get("value") for c in body.get("content") or [] if isinstance(c, dict)}
        if not content.get("text/plain"):
            return self.error(
                400,
                [("content.0.value", "The content value must be a string at least one character in length.")],
            )
        errors: list[tuple[str | None, str]] = []
        seen: set[str] = set()
        accepted: list[Accepted] = []
        for n, personalization in enumerate(personalizations):
            to = (personalization.get("to") or [{}])[0] if isinstance(personalization, dict) else {}
            email = str(to.get("email") or "") if isinstance(to, dict) else ""
            field = f"personalizations.{n}.to.0.email"
            if "@" not in email or email.partition("@")[0] == INVALID_EMAIL_LOCAL:
                errors.append((field, "Does not contain a valid address."))
                continue
            if email.lower() in seen:
                errors.append(
                    (
                        field,
                        "Each unique email address in the personalizations array should only be "
                        f"included once. You have included {email} more than once.",
                    )
                )
                continue
            seen.add(email.lower())
            subject = personalization.get("subject") or body.get("subject")
            if not subject:
                errors.append((f"personalizations.{n}.subject", "The subject is required."))
                continue
            text = str(content["text/plain"])
            for tag, value in (personalization.get("substitutions") or {}).items():
                text = text.replace(tag, str(value))
            custom_args = personalization.get("custom_args")
            custom = (
                {str(k): str(v) for k, v in custom_args.items()} if isinstance(custom_args, dict) else None
            )
            accepted.append(Accepted(email, email.lower(), str(sender["email"]), text, custom))
        return self.error(400, errors) if errors else accepted

    def ids(self, rng: Random, count: int) -> list[str]:
        message_id = base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big")).decode().rstrip("=")
        return [message_id] * count

    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response:
        return web.Response(status=202, headers={"X-Message-Id": items[0][0]})


class WebhookWire:
    """An in-house gateway: ``POST /webhook`` with a Bearer token, leadctl's JSON message, 200 + ``id``."""

    name = "webhook"
    path = "/webhook"

    @staticmethod
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return _json(status, {"error": message}, headers)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {SANDBOX_WEBHOOK_TOKEN}"

    def unauthorized(self) -> web.Response:
        return self.error(401, "unauthorized")

    def rate_limited(self) -> web.Response:
        return self.error(429, "rate limited", {"Retry-After": "1"})

    def server_error(self) -> web.Response:
        return self.error(500, "internal error")

    def parse(self, request: web.Request, raw: bytes) -> Parsed:
        body = _load(raw)
        if body is None or not all(body.get(key) for key in ("lead_id", "channel", "to", "body")):
            return self.error(400, "lead_id, channel, to and body are required")
        to = str(body["to"])
        if to == INVALID or to.partition("@")[0] == INVALID_EMAIL_LOCAL:
            return self.error(422, f"invalid recipient {to}")
        return [Accepted(to, to.lower(), None, str(body["body"]))]

    def ids(self, rng: Random, count: int) -> list[str]:
        return [_hex_id(rng, "wh_") for _ in range(count)]

    def accepted(self, request: web.Request, items: list[tuple[str, Accepted]]) -> web.Response:
        ((message_id, _),) = items
        return _json(200, {"id": message_id, "status": "queued"}, {"X-Request-Id": message_id})
