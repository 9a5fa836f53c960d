"""Helpers for the webhook and compliance tests: signed requests, seeded deliveries, waiting."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.webhooks import signatures
from leadctl.webhooks.server import Running, serve_in_thread
from tests.support.waiting import wait_for

TWILIO_TOKEN = "test-twilio-token"
META_SECRET = "test-meta-app-secret"
META_VERIFY = "test-meta-verify-token"
ZENVIA_TOKEN = "test-zenvia-webhook-token"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()

PROVIDERS = {
    "twilio": {"account_sid": "AC1", "auth_token": TWILIO_TOKEN, "from": "+15005550006"},
    "whatsapp_cloud": {
        "access_token": "t",
        "phone_number_id": "1",
        "app_secret": META_SECRET,
        "verify_token": META_VERIFY,
    },
    "sendgrid": {"api_key": "k", "from": "a@example.com", "webhook_public_key": SENDGRID_PUBLIC},
    "zenvia": {"api_token": "t", "from": "acme", "webhook_token": ZENVIA_TOKEN},
}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST over real HTTP; (status, body) whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def twilio(url: str, params: dict[str, str], token: str = TWILIO_TOKEN, signed_url: str | None = None):
    signature = signatures.twilio_signature(token, signed_url or url, params.items())
    headers = {"Content-Type": "application/x-www-form-urlencoded", signatures.TWILIO_HEADER: signature}
    return post(url, urlencode(params).encode(), headers)


def meta(url: str, value: dict[str, Any], secret: str = META_SECRET):
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", **value}}
    body = orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]})
    headers = {
        "Content-Type": "application/json",
        signatures.META_HEADER: signatures.meta_signature(secret, body),
    }
    return post(url, body, headers)


def sendgrid(url: str, events: list[dict[str, Any]], key: ec.EllipticCurvePrivateKey = SENDGRID_KEY):
    body = orjson.dumps(events)
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        signatures.SENDGRID_SIGNATURE: base64.b64encode(signature).decode(),
        signatures.SENDGRID_TIMESTAMP: timestamp,
    }
    return post(url, body, headers)


def zenvia(url: str, body: dict[str, Any], token: str = ZENVIA_TOKEN):
    headers = {"Content-Type": "application/json", signatures.ZENVIA_HEADER: token}
    return post(url, orjson.dumps(body), headers)


def seed(
    pg: psycopg.Connection, namespace: str, rows: list[tuple[str, str, str | None, str | None]]
) -> list[int]:
    """Sent leads as (channel, contact, provider, provider message id); returns their ids."""
    ids = []
    for channel, contact, provider, message_id in rows:
        (lead_id,) = pg.execute(
            f'INSERT INTO "{namespace}".leads (channel, contact, campaign) VALUES (%s, %s, %s) RETURNING id',
            (channel, contact, "test"),
        ).fetchone()
        pg.execute(
            f'INSERT INTO "{namespace}".deliveries (lead_id, channel, campaign, status, provider, '
            "provider_message_id) VALUES (%s, %s, 'test', 'sent', %s, %s)",
            (lead_id, channel, provider, message_id),
        )
        ids.append(lead_id)
    return ids


def receipt(pg: psycopg.Connection, namespace: str, lead_id: int) -> tuple[Any, ...]:
    """(delivery_status, delivered_at is set, read_at is set, delivery_error) of one lead."""
    row = pg.execute(
        "SELECT delivery_status, delivered_at IS NOT NULL, read_at IS NOT NULL, delivery_error"
        f' FROM "{namespace}".deliveries WHERE lead_id = %s',
        (lead_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def drained(base_url: str) -> None:
    """Wait until the webhook server has written every event it acknowledged."""
    wait_for(lambda: orjson.loads(get(base_url + "/healthz")[1])["waiting"] == 0, what="the webhook queue")


def with_providers(settings: Settings, **extra: Any) -> Settings:
    """``settings`` with the test providers (PROVIDERS) and ``extra`` top-level keys."""
    data = settings.model_dump(mode="json", by_alias=True)
    data.update(providers=PROVIDERS, **extra)
    return Settings.model_validate(data)


@contextmanager
def serving(settings: Settings) -> Iterator[Running]:
    """`leadctl webhooks serve` in a thread, with the test providers, on a migrated schema."""
    configured = with_providers(settings)
    open_postgres(configured.database.url or "", configured).close()
    with serve_in_thread(
        configured, Endpoints(configured.redis.url or "", configured.database.url or "")
    ) as running:
        yield running
