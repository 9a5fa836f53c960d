"""Provider webhook bodies -> delivery receipts and opt-outs, in one vocabulary (the records of
leadctl.store.receipts, which ranks the receipt statuses).

Opt-outs come from inbound replies that are an opt-out keyword, Twilio's own opt-out handling
(``OptOutType=STOP`` on an inbound message, error 21610 on a status), WhatsApp's marketing
opt-out (``user_preferences`` ``stop``, error 131050) and SendGrid's unsubscribe, group
unsubscribe, spam report and hard bounce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from leadctl.compliance.optout import OptOutKeywords
from leadctl.records import ReceiptStatus
from leadctl.store.receipts import Event, OptOut, Receipt

_TWILIO = {
    "sent": ReceiptStatus.SENT,
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "undelivered": ReceiptStatus.UNDELIVERED,
    "failed": ReceiptStatus.UNDELIVERED,
}
_META = {
    "sent": ReceiptStatus.SENT,
    "delivered": ReceiptStatus.DELIVERED,
    "read": ReceiptStatus.READ,
    "failed": ReceiptStatus.UNDELIVERED,
}
_ZENVIA = {
    "SENT": ReceiptStatus.SENT,
    "DELIVERED": ReceiptStatus.DELIVERED,
    "READ": ReceiptStatus.READ,
    "NOT_DELIVERED": ReceiptStatus.UNDELIVERED,
    "REJECTED": ReceiptStatus.UNDELIVERED,
}
_SENDGRID = {
    "processed": ReceiptStatus.SENT,
    "delivered": ReceiptStatus.DELIVERED,
    "open": ReceiptStatus.READ,
    "bounce": ReceiptStatus.BOUNCED,
    "dropped": ReceiptStatus.BOUNCED,
}
_SENDGRID_OPT_OUT = {
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed from a group",
    "spamreport": "reported spam",
}
_TWILIO_OPTED_OUT = "21610"
_META_OPTED_OUT = 131050


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return _now()


def _iso(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return _now()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def _phone(value: Any) -> str:
    """'whatsapp:+5511...' / '5511...' -> '+5511...' (providers write numbers three ways); '' for
    anything that is not an E.164 number, so that no such text becomes a suppression."""
    text = str(value or "").strip().removeprefix("whatsapp:")
    number = text if text.startswith("+") else "+" + text
    return number if _E164.fullmatch(number) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# -- Twilio (form-encoded) ---------------------------------------------------------------------


def twilio_status(form: Mapping[str, str]) -> list[Event]:
    """A Messaging status callback (MessageSid, MessageStatus, ErrorCode, To...)."""
    sid, raw = form.get("MessageSid") or form.get("SmsSid"), (form.get("MessageStatus") or "").lower()
    to = form.get("To", "")
    channel = "whatsapp" if to.startswith("whatsapp:") else "sms"
    contact, error, now = _phone(to) or None, form.get("ErrorCode") or None, _now()
    events: list[Event] = []
    status = _TWILIO.get(raw)
    if sid and status:
        events.append(Receipt("twilio", sid, status, now, None, error, contact, channel, dict(form)))
    if error == _TWILIO_OPTED_OUT and contact:
        evidence = f"twilio error 21610 (the recipient opted out) on message {sid}"
        events.append(OptOut("twilio", contact, channel, now, evidence, sid, dict(form)))
    return events


def twilio_inbound(form: Mapping[str, str], keywords: OptOutKeywords) -> list[Event]:
    """An incoming message (From, Body, MessageSid; OptOutType when Twilio's opt-out handling ran)."""
    sender, body = form.get("From", ""), form.get("Body", "")
    channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    opt_out_type = (form.get("OptOutType") or "").upper()
    contact = _phone(sender)
    if not contact or not (keywords.matches(body) or opt_out_type == "STOP"):
        return []
    evidence = f"reply {body.strip()[:40]!r} to twilio ({form.get('MessageSid', '?')})"
    return [OptOut("twilio", contact, channel, _now(), evidence, form.get("MessageSid"), dict(form))]


# -- Meta WhatsApp Cloud (JSON) ----------------------------------------------------------------


def _meta_text(message: dict[str, Any]) -> str:
    kind = message.get("type")
    if kind == "text":
        return str(_dict(message.get("text")).get("body") or "")
    if kind == "button":
        return str(_dict(message.get("button")).get("text") or "")
    if kind == "interactive":
        reply = _dict(message.get("interactive"))
        chosen = _dict(reply.get("button_reply")) or _dict(reply.get("list_reply"))
        return str(chosen.get("title") or "")
    return ""


def _meta_values(body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in _list(body.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            yield _dict(_dict(change).get("value"))


def meta(body: Mapping[str, Any], keywords: OptOutKeywords) -> list[Event]:
    """A WhatsApp Business Account webhook: ``statuses``, ``messages`` and ``user_preferences``."""
    events: list[Event] = []
    for value in _meta_values(body):
        for item in map(_dict, _list(value.get("statuses"))):
            wamid, status = str(item.get("id") or ""), _META.get(str(item.get("status")))
            contact, at = _phone(item.get("recipient_id")) or None, _epoch(item.get("timestamp"))
            codes = [_dict(e).get("code") for e in _list(item.get("errors"))]
            error = str(codes[0]) if codes and codes[0] is not None else None
            if wamid and status:
                events.append(
                    Receipt("whatsapp_cloud", wamid, status, at, None, error, contact, "whatsapp", item)
                )
            if _META_OPTED_OUT in codes and contact:
                evidence = f"whatsapp error 131050 (the user stopped marketing messages) on {wamid}"
                events.append(OptOut("whatsapp_cloud", contact, "whatsapp", at, evidence, wamid, item))
        for message in map(_dict, _list(value.get("messages"))):
            text = _meta_text(message)
            contact = _phone(message.get("from"))
            if contact and keywords.matches(text):
                evidence = f"reply {text.strip()[:40]!r} on whatsapp ({message.get('id', '?')})"
                at = _epoch(message.get("timestamp"))
                events.append(
                    OptOut("whatsapp_cloud", contact, "whatsapp", at, evidence, message.get("id"), message)
                )
        for preference in map(_dict, _list(value.get("user_preferences"))):
            if preference.get("category") == "marketing_messages" and preference.get("value") == "stop":
                evidence = f"whatsapp marketing opt-out: {preference.get('detail') or 'stop'}"
                contact = _phone(preference.get("wa_id"))
                at = _epoch(preference.get("timestamp"))
                if contact:
                    events.append(
                        OptOut("whatsapp_cloud", contact, "whatsapp", at, evidence, None, preference)
                    )
    return events


# -- SendGrid (JSON array of events) -----------------------------------------------------------


_MAX_LEAD_ID = 2**63 - 1  # PostgreSQL bigint


def _lead_id(value: Any) -> int | None:
    """The lead a SendGrid event names: ASCII digits within bigint, else none ('²', 30 digits)."""
    text = str(value or "")
    if not (text.isascii() and text.isdigit()):
        return None
    lead_id = int(text)
    return lead_id if lead_id <= _MAX_LEAD_ID else None


def sendgrid(body: Any) -> list[Event]:
    """Signed Event Webhook events; each carries the ``lead_id`` custom arg leadctl sent."""
    events: list[Event] = []
    for item in map(_dict, _list(body)):
        kind, email, at = (
            str(item.get("event") or ""),
            str(item.get("email") or "").lower(),
            _epoch(item.get("timestamp")),
        )
        message_id = str(item.get("sg_message_id") or "").split(".", 1)[0]
        status = _SENDGRID.get(kind)
        if status and message_id:
            error = (
                str(item.get("reason") or item.get("type") or "") or None
                if status == ReceiptStatus.BOUNCED
                else None
            )
            events.append(
                Receipt(
                    "sendgrid",
                    message_id,
                    status,
                    at,
                    _lead_id(item.get("lead_id")),
                    error,
                    email or None,
                    "email",
                    item,
                )
            )
        hard_bounce = kind == "bounce" and item.get("type", "bounce") == "bounce"
        if email and (kind in _SENDGRID_OPT_OUT or hard_bounce):
            what = _SENDGRID_OPT_OUT.get(kind, "hard bounce")
            evidence = f"sendgrid {kind}: {what} ({message_id or item.get('sg_event_id', '?')})"
            events.append(OptOut("sendgrid", email, "email", at, evidence, message_id or None, item))
    return events


# -- Zenvia (JSON) ------------------------------------------------------------------------------


def zenvia(body: Mapping[str, Any], keywords: OptOutKeywords) -> list[Event]:
    """A subscription event: ``MESSAGE_STATUS`` for our messages, ``MESSAGE`` (direction IN) for replies."""
    kind, channel = body.get("type"), str(body.get("channel") or "")
    if kind == "MESSAGE_STATUS":
        status_block = _dict(body.get("messageStatus"))
        status = _ZENVIA.get(str(status_block.get("code")))
        message_id = str(body.get("messageId") or "")
        if not status or not message_id:
            return []
        causes = [_dict(c) for c in _list(status_block.get("causes"))]
        error = str(causes[0].get("reason") or causes[0].get("details") or "") or None if causes else None
        at = _iso(status_block.get("timestamp") or body.get("timestamp"))
        return [Receipt("zenvia", message_id, status, at, None, error, None, channel or None, dict(body))]
    message = _dict(body.get("message"))
    if kind != "MESSAGE" or (message.get("direction") or body.get("direction")) != "IN":
        return []
    text = " ".join(
        str(c.get("text") or "")
        for c in map(_dict, _list(message.get("contents")))
        if c.get("type") == "text"
    )
    sender = _phone(message.get("from"))
    if not sender or not keywords.matches(text):
        return []
    channel = str(message.get("channel") or channel or "sms")
    evidence = f"reply {text.strip()[:40]!r} to zenvia {channel} ({message.get('id', '?')})"
    return [
        OptOut(
            "zenvia",
            sender,
            channel,
            _iso(body.get("timestamp")),
            evidence,
            message.get("id"),
            dict(body),
        )
    ]
