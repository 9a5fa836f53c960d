"""Issue #14: hostile but well-formed webhook requests get 4xx or are written, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from leadctl.config import Settings
from leadctl.webhooks import signatures
from leadctl.webhooks.server import Running
from tests.support import webhooks as kit


@pytest.fixture
def webhooks(settings: Settings) -> Iterator[Running]:
    with kit.serving(settings) as running:
        yield running


def test_a_non_utf8_signature_is_refused_not_a_crash(webhooks: Running) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", signatures.TWILIO_HEADER: "abc\xff=="}
    body = b"MessageSid=SM1&MessageStatus=sent"
    status, _ = kit.post(webhooks.url + "/webhooks/twilio/status", body, headers)
    assert status == 403


@pytest.mark.parametrize("lead_id", ["²", "1" * 30, "-1", "١٢"])
def test_a_sendgrid_lead_id_that_is_no_lead_does_not_stop_the_rest(
    webhooks: Running, pg: psycopg.Connection, namespace: str, lead_id: str
) -> None:
    (lead,) = kit.seed(pg, namespace, [("email", "a@example.com", "sendgrid", "MSG")])

    def event(kind: str, lead_ref: str) -> dict[str, Any]:
        return {
            "email": "a@example.com",
            "timestamp": 1_700_000_000,
            "event": kind,
            "sg_message_id": "MSG.filter0001.1.0",
            "sg_event_id": f"{kind}-{lead_ref}",
            "lead_id": lead_ref,
        }

    assert kit.sendgrid(webhooks.url + "/webhooks/sendgrid", [event("open", lead_id)])[0] == 200
    assert kit.sendgrid(webhooks.url + "/webhooks/sendgrid", [event("delivered", str(lead))])[0] == 200
    kit.drained(webhooks.url)
    assert kit.receipt(pg, namespace, lead)[0] == "delivered"


def _suppressed(pg: psycopg.Connection, namespace: str) -> list[str]:
    return [row[0] for row in pg.execute(f'SELECT contact FROM "{namespace}".suppressions ORDER BY 1')]


@pytest.mark.parametrize("sender", ["not a phone at all", "+55", "55abc11999990007"])
def test_an_opt_out_from_something_that_is_no_number_suppresses_nobody(
    webhooks: Running, pg: psycopg.Connection, namespace: str, sender: str
) -> None:
    def stop_from(who: str, message_id: str) -> dict[str, Any]:
        message = {
            "id": message_id,
            "from": who,
            "direction": "IN",
            "contents": [{"type": "text", "text": "SAIR"}],
        }
        return {"type": "MESSAGE", "channel": "sms", "direction": "IN", "message": message}

    url = webhooks.url + "/webhooks/zenvia"
    assert kit.zenvia(url, stop_from(sender, "in-bad"))[0] == 200
    assert kit.twilio(webhooks.url + "/webhooks/twilio/inbound", {"From": sender, "Body": "STOP"})[0] == 200
    assert kit.zenvia(url, stop_from("5511999990007", "in-good"))[0] == 200
    kit.drained(webhooks.url)
    assert _suppressed(pg, namespace) == ["+5511999990007"]
