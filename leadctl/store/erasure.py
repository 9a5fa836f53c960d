"""A person's data in PostgreSQL: everything about one contact, to export (LGPD access request) or
to erase (right to erasure), leaving a hashed tombstone so a re-import does not bring it back.

A person is matched by contact, phone or email (an email lead may carry the phone being erased),
emails without regard to case;
their deliveries go with their leads (the ``leads_deleted`` trigger). Webhook events are matched by contact,
lead, provider message id (not SendGrid's: one id covers a thousand emails) or by the contact
appearing anywhere in the event's payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from leadctl.store.migrations import quoted_schema
from leadctl.store.pseudonyms import namespace_salt_sql, sql_digest


@dataclass(frozen=True, slots=True)
class Erased:
    """Rows removed for one contact."""

    leads: int
    deliveries: int
    webhook_events: int
    suppressions: int
    lead_ids: dict[str, list[int]]
    """The removed leads' ids per channel (their queue entries are removed next, in Redis)."""


def _needle(contact: str) -> str:
    """What the contact looks like inside a provider payload: phones may lack the '+'."""
    return contact.removeprefix("+").lower()


class PersonalData:
    """Export and erasure statements of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.schema = quoted_schema(namespace)
        self.digest = sql_digest(namespace_salt_sql(namespace), "%(contact)s")
        self._person = (
            'lower(l.contact COLLATE "default") = %(contact)s OR l.phone = %(contact)s'
            " OR lower(l.email) = %(contact)s"
        )
        self._events = """
            lower(contact) = %(contact)s OR lead_id = ANY(%(ids)s)
            OR (provider <> 'sendgrid' AND message_id = ANY(%(message_ids)s))
            OR strpos(lower(payload::text), %(needle)s) > 0"""

    def _leads(self, conn: psycopg.Connection, contact: str) -> list[dict[str, Any]]:
        """The person's leads with their deliveries; ``contact`` already in lower case."""
        s = self.schema
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT l.id, l.channel, l.contact, l.name, l.phone, l.email, l.fields, l.campaign,
                           l.source, l.source_line, l.created_at, d.status, d.attempts, d.provider,
                           d.provider_message_id, d.error_code, d.queued_at, d.finished_at,
                           d.delivery_status, d.delivered_at, d.read_at, d.not_before
                      FROM {s}.leads l JOIN {s}.lead_deliveries d ON d.lead_id = l.id
                     WHERE {self._person} ORDER BY l.id""",
                {"contact": contact},
            )
            return cur.fetchall()

    def _params(self, contact: str, leads: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "contact": contact,
            "ids": [row["id"] for row in leads],
            "message_ids": [row["provider_message_id"] for row in leads if row["provider_message_id"]],
            "needle": _needle(contact),
        }

    def export(self, conn: psycopg.Connection, contact: str) -> dict[str, Any]:
        """Everything kept about ``contact``: leads with their deliveries, suppressions, webhook events."""
        contact = contact.lower()
        leads = self._leads(conn, contact)
        params = self._params(contact, leads)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT contact, channel, reason, created_at FROM {self.schema}.suppressions"
                ' WHERE lower(contact COLLATE "default") = %(contact)s',
                params,
            )
            suppressions = cur.fetchall()
            cur.execute(
                f"""SELECT provider, kind, message_id, status, error, channel, occurred_at, received_at,
                           payload
                      FROM {self.schema}.webhook_events WHERE {self._events} ORDER BY id""",
                params,
            )
            events = cur.fetchall()
            cur.execute(
                f"SELECT EXISTS (SELECT FROM {self.schema}.tombstones WHERE digest = {self.digest})", params
            )
            row = cur.fetchone()
        return {
            "contact": contact,
            "leads": leads,
            "suppressions": suppressions,
            "webhook_events": events,
            "erased": bool(row and row["exists"]),
        }

    def erase(self, conn: psycopg.Connection, contact: str) -> Erased:
        """Delete everything about ``contact`` and leave its tombstone, in one transaction."""
        s, contact = self.schema, contact.lower()
        with conn.transaction():
            leads = self._leads(conn, contact)
            params = self._params(contact, leads)
            events = conn.execute(f"DELETE FROM {s}.webhook_events WHERE {self._events}", params).rowcount
            suppressions = conn.execute(
                f'DELETE FROM {s}.suppressions WHERE lower(contact COLLATE "default") = %(contact)s', params
            ).rowcount
            removed = conn.execute(f"DELETE FROM {s}.leads WHERE id = ANY(%(ids)s)", params).rowcount
            conn.execute(
                f"INSERT INTO {s}.tombstones (digest) VALUES ({self.digest}) ON CONFLICT DO NOTHING", params
            )
        by_channel: dict[str, list[int]] = {}
        for row in leads:
            by_channel.setdefault(row["channel"], []).append(row["id"])
        deliveries = len(leads)  # one each, created or still queued
        return Erased(removed, deliveries, events, suppressions, by_channel)
