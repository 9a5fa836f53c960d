"""Delivery receipts and opt-outs from provider webhooks, written in batches (one statement each).

Receipt statuses, in the order a message goes through them (``RANK``): ``sent`` < ``delivered`` <
``undelivered`` / ``bounced`` < ``read``. A later receipt never moves a delivery back (a late
``sent`` leaves ``delivered`` alone); a failure after ``delivered`` wins (an email bounced after
its server took it), and ``read`` wins over everything (the person saw it).

A batch of events updates ``deliveries`` by provider message id (SendGrid's by lead id: one of its
message ids covers a whole request), never moving a delivery back in that order, so duplicates
and out-of-order receipts end in the right state. Receipts that match no delivery are kept in
``webhook_events``: often the provider's callback beat the worker's own record of the send, so
``reconcile`` applies them again for a while (and deletes those that found their delivery).
Opt-outs add their contact to the suppression list, with the event's time and the evidence, and
keep the event itself in ``webhook_events`` (once: a provider's duplicate of it adds nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from leadctl.records import ReceiptStatus
from leadctl.store.migrations import quoted_schema

RANK: dict[ReceiptStatus, int] = {
    ReceiptStatus.SENT: 1,
    ReceiptStatus.DELIVERED: 2,
    ReceiptStatus.UNDELIVERED: 3,
    ReceiptStatus.BOUNCED: 3,
    ReceiptStatus.READ: 4,
}
"""Receipt statuses in the order a delivery goes through them (a lower one never overwrites)."""

RECONCILE_WINDOW_S = 300
"""How long an unmatched receipt is retried: the time a worker may take to record its send."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery status for the message ``message_id`` (and, when the provider echoes it, ``lead_id``)."""

    provider: str
    message_id: str
    status: ReceiptStatus
    at: datetime
    lead_id: int | None = None
    error: str | None = None
    contact: str | None = None
    channel: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OptOut:
    """A person asking not to be messaged, with the evidence."""

    provider: str
    contact: str
    channel: str
    at: datetime
    evidence: str
    message_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


Event = Receipt | OptOut


def _rank(column: str) -> str:
    cases = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in RANK.items())
    return f"(CASE {column} {cases} ELSE 0 END)"


# Applies the status rows of ``ev`` (kind, provider, message_id, lead_id, status, error, at) and
# returns the (provider, message_id, lead_id) keys that found their delivery, as ``applied``.
_APPLY = """
agg AS (
    SELECT provider, message_id, lead_id,
           (array_agg(status ORDER BY {ev_rank} DESC, at DESC))[1] AS status,
           max({ev_rank}) AS rank,
           (array_agg(error ORDER BY {ev_rank} DESC, at DESC))[1] AS error,
           min(at) FILTER (WHERE status IN ('delivered', 'read')) AS delivered_at,
           min(at) FILTER (WHERE status = 'read') AS read_at
      FROM ev WHERE kind = 'status' GROUP BY provider, message_id, lead_id
), target AS (
    SELECT agg.*, coalesce(agg.lead_id, CASE WHEN agg.provider <> 'sendgrid' THEN (
               SELECT d.lead_id FROM {schema}.deliveries d
                WHERE d.provider_message_id = agg.message_id LIMIT 1
           ) END) AS target_id
      FROM agg
), applied AS (
    UPDATE {schema}.deliveries d
       SET delivery_status = CASE WHEN t.rank > {d_rank} THEN t.status ELSE d.delivery_status END,
           delivery_error = CASE WHEN t.rank > {d_rank} THEN t.error ELSE d.delivery_error END,
           delivered_at = LEAST(d.delivered_at, t.delivered_at),
           read_at = LEAST(d.read_at, t.read_at)
      FROM target t
     WHERE d.lead_id = t.target_id AND d.provider_message_id = t.message_id
 RETURNING t.provider, t.message_id, t.lead_id
)"""

_MATCHED = """EXISTS (SELECT FROM applied a WHERE a.provider = ev.provider AND a.message_id = ev.message_id
                  AND a.lead_id IS NOT DISTINCT FROM ev.lead_id)"""

_EVENT_COLUMNS = "provider, kind, message_id, lead_id, status, error, contact, channel, occurred_at, payload"

_BATCH = """
WITH ev AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
                         %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
           AS e(kind, provider, message_id, lead_id, status, error, contact, channel, at, payload,
                reason, scope)
), {apply}, unknown AS (
    INSERT INTO {schema}.webhook_events ({columns})
    SELECT provider, kind, message_id, lead_id, status, error, contact, channel, at, payload::jsonb
      FROM ev WHERE kind = 'status' AND NOT {matched}
 RETURNING 1
), suppressed AS (
    INSERT INTO {schema}.suppressions (contact, channel, reason, created_at)
    SELECT DISTINCT ON (contact, scope) contact, scope, reason, at
      FROM ev WHERE kind = 'optout' ORDER BY contact, scope, at
        ON CONFLICT (contact, channel) DO NOTHING
 RETURNING 1
), evidence AS (
    INSERT INTO {schema}.webhook_events ({columns})
    SELECT provider, kind, message_id, lead_id, status, error, contact, channel, at, payload::jsonb
      FROM ev WHERE kind = 'optout'
        ON CONFLICT (provider, message_id, contact) WHERE kind = 'optout' DO NOTHING
)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM unknown), (SELECT count(*) FROM suppressed)
"""

_RECONCILE = """
WITH ev AS (
    SELECT id, kind, provider, message_id, lead_id, status, error, occurred_at AS at
      FROM {schema}.webhook_events
     WHERE kind = 'status' AND received_at > now() - make_interval(secs => %(window)s)
     ORDER BY id LIMIT %(limit)s
), {apply}, done AS (
    DELETE FROM {schema}.webhook_events w USING ev WHERE w.id = ev.id AND {matched}
 RETURNING 1
)
SELECT count(*) FROM done
"""

_SUPPRESS_LEADS = """
INSERT INTO {schema}.suppressions (contact, channel, reason)
SELECT l.contact, CASE WHEN %(all)s THEN '*' ELSE l.channel END, v.reason
  FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS v(id, reason)
  JOIN {schema}.leads l ON l.id = v.id
    ON CONFLICT (contact, channel) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """One batch: receipts that found their delivery, receipts kept as unknown, contacts newly suppressed."""

    matched: int
    unknown: int
    suppressed: int


def _payload(event: Event) -> str:
    # PostgreSQL's jsonb refuses the NUL character; a provider field holding one loses it
    return orjson.dumps(dict(event.payload), default=str).decode().replace("\\u0000", "")


def _row(event: Event, suppress_all: bool) -> tuple[object, ...]:
    """One event as the batch statement's columns (kind ... scope)."""
    if isinstance(event, Receipt):
        return (
            "status",
            event.provider,
            event.message_id,
            event.lead_id,
            event.status,
            event.error,
            event.contact,
            event.channel,
            event.at,
            _payload(event),
            None,
            None,
        )
    scope = "*" if suppress_all else event.channel
    return (
        "optout",
        event.provider,
        event.message_id,
        None,
        None,
        None,
        event.contact,
        event.channel,
        event.at,
        _payload(event),
        event.evidence,
        scope,
    )


class ReceiptStore:
    """The webhook statements of one namespace, for asyncio connections."""

    def __init__(self, namespace: str) -> None:
        schema = quoted_schema(namespace)
        apply = _APPLY.format(schema=schema, ev_rank=_rank("status"), d_rank=_rank("d.delivery_status"))
        self._batch = _BATCH.format(schema=schema, apply=apply, columns=_EVENT_COLUMNS, matched=_MATCHED)
        self._reconcile = _RECONCILE.format(schema=schema, apply=apply, matched=_MATCHED)
        self._suppress_leads = _SUPPRESS_LEADS.format(schema=schema)

    async def apply(
        self, conn: psycopg.AsyncConnection, events: Sequence[Event], suppress_all: bool
    ) -> Applied:
        """Write a batch of events in one statement; ``suppress_all``: opt-outs suppress every channel."""
        rows = [_row(event, suppress_all) for event in events]
        cur = await conn.execute(self._batch, [list(column) for column in zip(*rows, strict=True)])
        row = await cur.fetchone()
        assert row is not None
        return Applied(int(row[0]), int(row[1]), int(row[2]))

    async def reconcile(self, conn: psycopg.AsyncConnection, limit: int = 20_000) -> int:
        """Apply receipts kept as unknown in the last few minutes again; return how many now matched."""
        cur = await conn.execute(self._reconcile, {"window": RECONCILE_WINDOW_S, "limit": limit})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def suppress_leads(
        self, conn: psycopg.AsyncConnection, reasons: dict[int, str], suppress_all: bool
    ) -> None:
        """Suppress the contacts of these leads (a provider said they opted out), with the reason."""
        if reasons:
            await conn.execute(
                self._suppress_leads,
                {"ids": list(reasons), "reasons": list(reasons.values()), "all": suppress_all},
            )
