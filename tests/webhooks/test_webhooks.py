"""`leadctl webhooks serve` over real HTTP: each provider's signature, receipts in order, opt-outs, limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.webhooks.server import Running, serve_in_thread
from tests.support import webhooks as kit
from tests.support.waiting import wait_for


@pytest.fixture
def webhooks(settings: Settings) -> Iterator[Running]:
    with kit.serving(settings) as running:
        yield running


def _events(pg: psycopg.Connection, namespace: str) -> list[tuple[str, str, str | None]]:
    return pg.execute(
        f'SELECT provider, kind, message_id FROM "{namespace}".webhook_events ORDER BY id'
    ).fetchall()


def _suppressions(pg: psycopg.Connection, namespace: str) -> list[tuple[str, str, str]]:
    return pg.execute(
        f'SELECT contact, channel, reason FROM "{namespace}".suppressions ORDER BY 1, 2'
    ).fetchall()


def test_twilio_status_signed_duplicated_and_late(
    webhooks: Running, pg: psycopg.Connection, namespace: str
) -> None:
    (lead,) = kit.seed(pg, namespace, [("sms", "+5511999990001", "twilio", "SM1")])
    url = webhooks.url + "/webhooks/twilio/status"
    status = {"MessageSid": "SM1", "To": "+5511999990001", "From": "+15005550006", "AccountSid": "AC1"}

    assert kit.twilio(url, {**status, "MessageStatus": "delivered"})[0] == 200
    assert kit.twilio(url, {**status, "MessageStatus": "delivered"})[0] == 200  # duplicate
    assert kit.twilio(url, {**status, "MessageStatus": "sent"})[0] == 200  # late: never moves it back
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, lead) == ("delivered", True, False, None)

    forged = {**status, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert kit.twilio(url, forged, token="not-the-token")[0] == 403
    assert kit.post(url, b"MessageSid=SM1&MessageStatus=undelivered", {})[0] == 403  # no signature
    assert kit.twilio(url, forged, signed_url=url + "?other")[0] == 403  # signed for another URL
    assert kit.receipt(pg, namespace, lead) == ("delivered", True, False, None)

    assert kit.twilio(url, forged)[0] == 200  # a real failure after delivery wins
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, lead) == ("undelivered", True, False, "30003")

    assert kit.twilio(url, {**status, "MessageSid": "SM-not-ours", "MessageStatus": "delivered"})[0] == 200
    kit.drained(webhooks.url)
    assert _events(pg, namespace) == [("twilio", "status", "SM-not-ours")]


def test_twilio_signature_over_the_public_url(
    settings: Settings, pg: psycopg.Connection, namespace: str
) -> None:
    public = "https://hooks.example.com/leadctl"
    configured = kit.with_providers(settings, webhooks={"public_url": public})
    open_postgres(configured.database.url or "", configured).close()
    (lead,) = kit.seed(pg, namespace, [("sms", "+5511999990001", "twilio", "SM1")])
    endpoints = Endpoints(configured.redis.url or "", configured.database.url or "")
    with serve_in_thread(configured, endpoints) as running:
        url = running.url + "/webhooks/twilio/status"
        params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+5511999990001"}
        assert kit.twilio(url, params)[0] == 403  # signed for the URL reached, not the public one
        assert kit.receipt(pg, namespace, lead)[0] is None
        assert kit.twilio(url, params, signed_url=public + "/webhooks/twilio/status")[0] == 200
    assert kit.receipt(pg, namespace, lead)[0] == "delivered"


def test_whatsapp_handshake_statuses_out_of_order_and_opt_outs(
    webhooks: Running, pg: psycopg.Connection, namespace: str
) -> None:
    url = webhooks.url + "/webhooks/whatsapp"
    query = "?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
    assert kit.get(url + query + kit.META_VERIFY) == (200, b"1158201444")
    assert kit.get(url + query + "wrong")[0] == 403

    (lead,) = kit.seed(pg, namespace, [("whatsapp", "+5511999990002", "whatsapp_cloud", "wamid.A")])

    def status(name: str, at: int) -> dict[str, Any]:
        return {"id": "wamid.A", "status": name, "timestamp": str(at), "recipient_id": "5511999990002"}

    assert kit.meta(url, {"statuses": [status("read", 1_700_000_300)]})[0] == 200
    both = [
        status("sent", 1_700_000_100),
        status("delivered", 1_700_000_200),
        status("delivered", 1_700_000_200),
    ]
    assert kit.meta(url, {"statuses": both})[0] == 200
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, lead) == ("read", True, True, None)
    delivered_at, read_at = pg.execute(
        f'SELECT extract(epoch FROM delivered_at), extract(epoch FROM read_at) FROM "{namespace}".deliveries'
    ).fetchone()
    assert (delivered_at, read_at) == (
        1_700_000_200,
        1_700_000_300,
    )  # the earliest of each, whatever the order

    failed = {**status("failed", 1_700_000_400), "errors": [{"code": 131026}]}
    assert kit.meta(url, {"statuses": [failed]}, secret="another-app")[0] == 403
    assert kit.receipt(pg, namespace, lead)[0] == "read"

    reply = {
        "from": "5511999990003",
        "id": "wamid.in",
        "timestamp": "1700000500",
        "type": "text",
        "text": {"body": "PARE"},
    }
    chat = {
        "from": "5511999990004",
        "id": "wamid.in2",
        "timestamp": "1700000500",
        "type": "text",
        "text": {"body": "pare de mandar?"},
    }
    preference = {
        "wa_id": "5511999990005",
        "category": "marketing_messages",
        "value": "stop",
        "detail": "Stop promotions",
    }
    assert kit.meta(url, {"messages": [reply, chat], "user_preferences": [preference]})[0] == 200
    suppressed = _suppressions(pg, namespace)
    assert [(c, ch) for c, ch, _ in suppressed] == [
        ("+5511999990003", "whatsapp"),
        ("+5511999990005", "whatsapp"),
    ]
    assert "'PARE'" in suppressed[0][2] and "marketing opt-out" in suppressed[1][2]
    assert [kind for _, kind, _ in _events(pg, namespace)] == ["optout", "optout"]  # the evidence


def test_sendgrid_signed_events_by_lead(webhooks: Running, pg: psycopg.Connection, namespace: str) -> None:
    # one X-Message-Id covers a whole request: events are matched by the lead_id custom arg
    a, b = kit.seed(
        pg,
        namespace,
        [("email", "a@example.com", "sendgrid", "MSG"), ("email", "b@example.com", "sendgrid", "MSG")],
    )
    url = webhooks.url + "/webhooks/sendgrid"

    def event(kind: str, email: str, lead: int, **more: Any) -> dict[str, Any]:
        base = {
            "email": email,
            "timestamp": 1_700_000_000,
            "event": kind,
            "sg_message_id": "MSG.filter0001.1.0",
        }
        return {**base, "lead_id": str(lead), "sg_event_id": f"{kind}{lead}", **more}

    events = [
        event("open", "a@example.com", a),
        event("delivered", "a@example.com", a),
        event("processed", "b@example.com", b),
    ]
    assert kit.sendgrid(url, events)[0] == 200
    assert (
        kit.sendgrid(url, [event("bounce", "b@example.com", b, type="bounce", reason="550 no such user")])[0]
        == 200
    )
    assert kit.sendgrid(url, [event("delivered", "b@example.com", b)])[0] == 200  # late
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, a) == ("read", True, True, None)
    assert kit.receipt(pg, namespace, b) == ("bounced", True, False, "550 no such user")

    impostor = ec.generate_private_key(ec.SECP256R1())
    assert kit.sendgrid(url, [event("unsubscribe", "a@example.com", a)], key=impostor)[0] == 403
    assert [c for c, _, _ in _suppressions(pg, namespace)] == ["b@example.com"]  # the hard bounce
    assert kit.sendgrid(url, [event("spamreport", "a@example.com", a)])[0] == 200
    assert [(c, ch) for c, ch, _ in _suppressions(pg, namespace)] == [
        ("a@example.com", "email"),
        ("b@example.com", "email"),
    ]


def test_zenvia_token_statuses_and_reply(webhooks: Running, pg: psycopg.Connection, namespace: str) -> None:
    (lead,) = kit.seed(pg, namespace, [("sms", "+5511999990006", "zenvia", "zen-1")])
    url = webhooks.url + "/webhooks/zenvia"

    def status(code: str) -> dict[str, Any]:
        block = {"timestamp": "2024-06-03T12:00:00Z", "code": code}
        return {"type": "MESSAGE_STATUS", "channel": "sms", "messageId": "zen-1", "messageStatus": block}

    assert kit.zenvia(url, status("DELIVERED"), token="guess")[0] == 403
    assert kit.post(url, orjson.dumps(status("DELIVERED")), {"Content-Type": "application/json"})[0] == 403
    assert kit.receipt(pg, namespace, lead)[0] is None
    for code in ("DELIVERED", "SENT", "DELIVERED"):
        assert kit.zenvia(url, status(code))[0] == 200
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, lead) == ("delivered", True, False, None)

    message = {
        "id": "in-1",
        "from": "5511999990007",
        "direction": "IN",
        "contents": [{"type": "text", "text": " Descadastrar. "}],
    }
    reply = {
        "type": "MESSAGE",
        "channel": "sms",
        "direction": "IN",
        "timestamp": "2024-06-03T12:01:00Z",
        "message": message,
    }
    assert kit.zenvia(url, reply)[0] == 200
    assert [(c, ch) for c, ch, _ in _suppressions(pg, namespace)] == [("+5511999990007", "sms")]


def test_opt_out_on_every_channel_and_oversized_bodies(
    settings: Settings, pg: psycopg.Connection, namespace: str
) -> None:
    configured = kit.with_providers(settings, optout={"scope": "all"}, webhooks={"max_body_bytes": 4096})
    open_postgres(configured.database.url or "", configured).close()
    endpoints = Endpoints(configured.redis.url or "", configured.database.url or "")
    with serve_in_thread(configured, endpoints) as running:
        url = running.url + "/webhooks/twilio/inbound"
        reply = {
            "MessageSid": "SMin",
            "From": "whatsapp:+5511999990008",
            "To": "whatsapp:+15005550006",
            "Body": "Sair",
        }
        answer = kit.twilio(url, reply)
        assert answer[0] == 200 and b"<Response>" in answer[1]
        huge = {**reply, "From": "+5511999990009", "Body": "STOP", "Filler": "x" * 5000}
        assert kit.twilio(url, huge)[0] == 413
        assert kit.get(running.url + "/healthz")[0] == 200
    assert _suppressions(pg, namespace) == [("+5511999990008", "*", "reply 'Sair' to twilio (SMin)")]


def test_receipt_ahead_of_the_send_record_is_applied_later(
    webhooks: Running, pg: psycopg.Connection, namespace: str
) -> None:
    # the provider's callback can beat the worker's own record of the send
    (lead,) = kit.seed(pg, namespace, [("sms", "+5511999990010", "twilio", None)])
    url = webhooks.url + "/webhooks/twilio/status"
    assert (
        kit.twilio(url, {"MessageSid": "SMearly", "MessageStatus": "delivered", "To": "+5511999990010"})[0]
        == 200
    )
    kit.drained(webhooks.url)
    assert _events(pg, namespace) == [("twilio", "status", "SMearly")]
    pg.execute(
        f'UPDATE "{namespace}".deliveries SET provider_message_id = %s WHERE lead_id = %s', ("SMearly", lead)
    )
    wait_for(lambda: kit.receipt(pg, namespace, lead)[0] == "delivered", what="the reconciled receipt")
    assert _events(pg, namespace) == []
