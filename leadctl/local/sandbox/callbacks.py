"""The sandbox's webhooks: each fake provider's signed status callbacks and inbound replies.

After a message is accepted the sandbox posts its statuses to ``callback_url`` (the base URL of
`leadctl webhooks serve`), signed as the real provider signs them (leadctl.webhooks.signatures):

- Twilio: ``/webhooks/twilio/status`` sent, delivered (and read on WhatsApp); replies to
  ``/webhooks/twilio/inbound``. Signed with the sandbox's auth token.
- WhatsApp Cloud: ``/webhooks/whatsapp`` sent, delivered, read; replies as ``messages``. Signed
  with ``SANDBOX_META_APP_SECRET``.
- Zenvia: ``/webhooks/zenvia`` SENT, DELIVERED (READ on WhatsApp); replies as MESSAGE events.
  Carries ``X-Webhook-Token: SANDBOX_ZENVIA_WEBHOOK_TOKEN``.
- SendGrid: ``/webhooks/sendgrid`` processed, delivered, open, with the ``lead_id`` custom arg.
  Signed with the sandbox's ECDSA key, whose public half is ``SANDBOX_SENDGRID_PUBLIC_KEY``.

Faults: ``delay_ms`` between a message and each of its statuses (log-normal around it),
``duplicate_rate`` (a callback sent twice), ``reorder_rate`` (a message's statuses sent last first),
``failure_rate`` (a message ends undelivered / failed / NOT_DELIVERED / bounce). ``replies`` maps a
contact to the text it replies once its message is accepted; ``reply()`` sends one on demand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Mapping
from random import Random
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from leadctl.local.sandbox.wires import SANDBOX_ACCOUNT_SID, SANDBOX_PHONE_NUMBER_ID, Accepted
from leadctl.webhooks import signatures

SANDBOX_META_APP_SECRET = "sandbox-meta-app-secret"
SANDBOX_META_VERIFY_TOKEN = "sandbox-meta-verify-token"
SANDBOX_ZENVIA_WEBHOOK_TOKEN = "sandbox-zenvia-webhook-token"
SANDBOX_WABA_ID = "100000000000002"

_SENDGRID_KEY = ec.derive_private_key(
    int.from_bytes(hashlib.sha256(b"leadctl sandbox sendgrid event webhook").digest()), ec.SECP256R1()
)
SANDBOX_SENDGRID_PUBLIC_KEY = base64.b64encode(
    _SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
"""The verification key to configure as ``providers.<sendgrid>.webhook_public_key``."""

_STATUSES = {
    "twilio": (["sent", "delivered"], ["sent", "undelivered"]),
    "whatsapp_cloud": (["sent", "delivered", "read"], ["sent", "failed"]),
    "zenvia": (["SENT", "DELIVERED"], ["SENT", "NOT_DELIVERED"]),
    "sendgrid": (["processed", "delivered", "open"], ["processed", "bounce"]),
}
_READ = {"twilio": "read", "zenvia": "READ"}


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))


class Callbacks:
    """Posts signed webhooks to ``base_url`` from the sandbox's event loop."""

    def __init__(
        self,
        base_url: str,
        auth_token: str,
        rng: Random,
        *,
        delay_ms: float = 50.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        failure_rate: float = 0.0,
        replies: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.rng = rng
        self.delay_s = delay_ms / 1000
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.failure_rate = failure_rate
        self.replies = dict(replies or {})
        self.sent = self.failed = 0
        self.fates: dict[tuple[str, str], bool] = {}
        """(provider, contact) -> whether its message ends delivered (False: it fails)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- scheduling ----------------------------------------------------------------------------

    def accepted(self, provider: str, channel: str, items: list[tuple[str, Accepted]]) -> None:
        """Schedule the statuses of messages just accepted (and the replies configured for them)."""
        if provider not in _STATUSES:
            return
        for message_id, item in items:
            channel = "whatsapp" if item.to.startswith("whatsapp:") else channel
            good, bad = _STATUSES[provider]
            fails = self.rng.random() < self.failure_rate
            self.fates[(provider, item.contact)] = not fails
            statuses = list(bad if fails else good)
            if channel == "whatsapp" and provider in _READ and statuses == good:
                statuses.append(_READ[provider])
            if self.rng.random() < self.reorder_rate:
                statuses.reverse()
            posts = [self._status(provider, channel, message_id, item, status) for status in statuses]
            reply = self.replies.get(item.contact)
            if reply is not None:
                posts.append(self._reply(provider, channel, item.contact, reply, item.from_))
            self._spawn(posts)

    def reply(self, provider: str, channel: str, contact: str, text: str) -> None:
        """Send an inbound message from ``contact`` (E.164 phone) as ``provider`` would."""
        self._spawn([self._reply(provider, channel, contact, text, None)])

    def _spawn(self, posts: list[tuple[str, bytes, dict[str, str]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._post_all(posts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_all(self, posts: list[tuple[str, bytes, dict[str, str]]]) -> None:
        for path, body, headers in posts:
            await asyncio.sleep(self.rng.lognormvariate(0, 0.5) * self.delay_s)
            copies = 2 if self.rng.random() < self.duplicate_rate else 1
            for _ in range(copies):
                await self._post(path, body, headers)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(self.base_url + path, data=body, headers=headers) as answer:
                ok = answer.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            self.sent += 1
        else:
            self.failed += 1

    def counts(self) -> dict[str, int]:
        """Callbacks posted and answered 2xx (``sent``), or not (``failed``)."""
        return {"sent": self.sent, "failed": self.failed, "waiting": len(self._tasks)}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- bodies --------------------------------------------------------------------------------

    def _status(
        self, provider: str, channel: str, message_id: str, item: Accepted, status: str
    ) -> tuple[str, bytes, dict[str, str]]:
        now = time.time()
        if provider == "twilio":
            params = {
                "AccountSid": SANDBOX_ACCOUNT_SID,
                "ApiVersion": "2010-04-01",
                "From": item.from_ or "",
                "MessageSid": message_id,
                "MessageStatus": status,
                "SmsSid": message_id,
                "SmsStatus": status,
                "To": item.to,
            }
            if status == "undelivered":
                params["ErrorCode"] = "30003"
            return self._twilio("/webhooks/twilio/status", params)
        if provider == "whatsapp_cloud":
            entry: dict[str, Any] = {
                "id": message_id,
                "status": status,
                "timestamp": str(int(now)),
                "recipient_id": item.to.removeprefix("+"),
            }
            if status == "failed":
                entry["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
            return self._meta({"statuses": [entry]})
        if provider == "zenvia":
            body = {
                "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "timestamp": _iso(now),
                "type": "MESSAGE_STATUS",
                "subscriptionId": "sandbox-subscription",
                "channel": channel,
                "messageId": message_id,
                "contentIndex": 0,
                "messageStatus": {"timestamp": _iso(now), "code": status, "description": status.title()},
            }
            return self._zenvia(body)
        event: dict[str, Any] = {
            "email": item.to,
            "timestamp": int(now),
            "event": status,
            "sg_event_id": base64.urlsafe_b64encode(self.rng.getrandbits(128).to_bytes(16, "big")).decode(),
            "sg_message_id": f"{message_id}.sandbox.{self.rng.getrandbits(32):08x}.0",
            **(item.custom_args or {}),
        }
        if status == "bounce":
            event |= {"type": "bounce", "reason": "550 5.1.1 The email account does not exist."}
        return self._sendgrid([event])

    def _reply(
        self, provider: str, channel: str, contact: str, text: str, to: str | None
    ) -> tuple[str, bytes, dict[str, str]]:
        now = time.time()
        message_id = f"{self.rng.getrandbits(128):032x}"
        if provider == "twilio":
            prefix = "whatsapp:" if channel == "whatsapp" else ""
            params = {
                "AccountSid": SANDBOX_ACCOUNT_SID,
                "ApiVersion": "2010-04-01",
                "Body": text,
                "From": prefix + contact,
                "MessageSid": "SM" + message_id,
                "NumMedia": "0",
                "To": to or prefix + "+15005550006",
            }
            return self._twilio("/webhooks/twilio/inbound", params)
        if provider == "whatsapp_cloud":
            digits = contact.removeprefix("+")
            message = {
                "from": digits,
                "id": "wamid.sandbox" + message_id,
                "timestamp": str(int(now)),
                "type": "text",
                "text": {"body": text},
            }
            contacts = [{"profile": {"name": "Sandbox"}, "wa_id": digits}]
            return self._meta({"contacts": contacts, "messages": [message]})
        if provider == "zenvia":
            body = {
                "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "timestamp": _iso(now),
                "type": "MESSAGE",
                "subscriptionId": "sandbox-subscription",
                "channel": channel,
                "direction": "IN",
                "message": {
                    "id": message_id,
                    "from": contact.removeprefix("+"),
                    "to": to or "sandbox",
                    "direction": "IN",
                    "channel": channel,
                    "contents": [{"type": "text", "text": text}],
                },
            }
            return self._zenvia(body)
        raise ValueError(f"the sandbox sends no {provider} replies (twilio, whatsapp_cloud, zenvia)")

    # -- signing -------------------------------------------------------------------------------

    def _twilio(self, path: str, params: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
        signature = signatures.twilio_signature(self.auth_token, self.base_url + path, params.items())
        headers = {"Content-Type": "application/x-www-form-urlencoded", signatures.TWILIO_HEADER: signature}
        return path, urlencode(params).encode(), headers

    def _meta(self, value: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        metadata = {"display_phone_number": "15005550006", "phone_number_id": SANDBOX_PHONE_NUMBER_ID}
        change = {
            "field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
        }
        body = orjson.dumps(
            {"object": "whatsapp_business_account", "entry": [{"id": SANDBOX_WABA_ID, "changes": [change]}]}
        )
        headers = {
            "Content-Type": "application/json",
            signatures.META_HEADER: signatures.meta_signature(SANDBOX_META_APP_SECRET, body),
        }
        return "/webhooks/whatsapp", body, headers

    def _zenvia(self, body: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json", signatures.ZENVIA_HEADER: SANDBOX_ZENVIA_WEBHOOK_TOKEN}
        return "/webhooks/zenvia", orjson.dumps(body), headers

    def _sendgrid(self, events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
        body = orjson.dumps(events)
        timestamp = str(int(time.time()))
        signature = _SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            signatures.SENDGRID_SIGNATURE: base64.b64encode(signature).decode(),
            signatures.SENDGRID_TIMESTAMP: timestamp,
        }
        return "/webhooks/sendgrid", body, headers
