"""The operator's statements (leadctl.ops.recovery): the leads of dead letters, leads in doubt,
and the queued leads a stream should hold.

Leads are found by primary key where the caller names them; ``(channel = ...) IS TRUE`` keeps the
planner from also reading every lead of the channel in the (channel, contact) index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from leadctl.store.migrations import quoted_schema

_REQUEUED = "status = 'queued', worker = NULL, claimed_at = NULL, finished_at = NULL, queued_at = now()"
"""A delivery put back in the queue (its ``attempts`` keep counting)."""


class LeadState(NamedTuple):
    """What PostgreSQL holds about a dead letter's lead."""

    contact: str
    status: str
    attempts: int


def lead_states(
    conn: psycopg.Connection, namespace: str, channel: str, lead_ids: Sequence[int]
) -> dict[int, LeadState]:
    """The leads of ``lead_ids`` on ``channel`` (those that exist), by id."""
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"SELECT d.lead_id, l.contact, d.status, d.attempts FROM {schema}.lead_deliveries d "
        f"JOIN {schema}.leads l ON l.id = d.lead_id "
        "WHERE (d.channel = %s) IS TRUE AND d.lead_id = ANY(%s)",
        (channel, list(lead_ids)),
    ).fetchall()
    return {row[0]: LeadState(*row[1:]) for row in rows}


def revive_dead(
    conn: psycopg.Connection, namespace: str, channel: str, lead_ids: Sequence[int]
) -> list[tuple[int, bool]]:
    """Put the ``dead`` leads of ``lead_ids`` back to ``queued``, in one statement. Return each lead
    found on ``channel`` with whether it is now queued (revived, or queued already)."""
    schema = quoted_schema(namespace)
    return conn.execute(
        f"""WITH revived AS (
                UPDATE {schema}.deliveries SET {_REQUEUED}
                 WHERE channel = %(channel)s AND lead_id = ANY(%(ids)s) AND status = 'dead'
             RETURNING lead_id)
            SELECT d.lead_id, r.lead_id IS NOT NULL OR d.status = 'queued'
              FROM {schema}.lead_deliveries d LEFT JOIN revived r ON r.lead_id = d.lead_id
             WHERE (d.channel = %(channel)s) IS TRUE AND d.lead_id = ANY(%(ids)s)""",
        {"channel": channel, "ids": list(lead_ids)},
    ).fetchall()


def due_queued(conn: psycopg.Connection, namespace: str, channel: str) -> list[int]:
    """The ids of the channel's ``queued`` leads that may be sent now (not deferred to later), in order."""
    rows = conn.execute(
        f"SELECT lead_id FROM {quoted_schema(namespace)}.lead_deliveries "
        "WHERE channel = %s AND status = 'queued' AND (not_before IS NULL OR not_before <= now()) "
        "ORDER BY lead_id",
        (channel,),
    ).fetchall()
    return [lead_id for (lead_id,) in rows]


# -- in doubt ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoubtfulLead:
    """A lead whose send may or may not have reached the provider."""

    lead_id: int
    channel: str
    contact: str
    provider: str | None
    error_code: str | None
    error: str | None
    attempts: int
    since: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "channel": self.channel,
            "contact": self.contact,
            "provider": self.provider,
            "error_code": self.error_code,
            "error": self.error,
            "attempts": self.attempts,
            "since": self.since.isoformat() if self.since else None,
        }


def _selection(channels: Sequence[str], lead_ids: Sequence[int] | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause choosing in-doubt deliveries of ``channels`` (and of ``lead_ids`` when given)."""
    where = "d.status = 'in_doubt' AND d.channel = ANY(%(channels)s)"
    params: dict[str, Any] = {"channels": list(channels)}
    if lead_ids is not None:
        where += " AND d.lead_id = ANY(%(ids)s)"
        params["ids"] = list(lead_ids)
    return where, params


def doubtful_leads(
    conn: psycopg.Connection,
    namespace: str,
    channels: Sequence[str],
    lead_ids: Sequence[int] | None,
    limit: int | None,
) -> tuple[int, list[DoubtfulLead]]:
    """How many leads of ``channels`` (and ``lead_ids``) are in doubt, and the oldest ``limit`` of them."""
    schema = quoted_schema(namespace)
    where, params = _selection(channels, lead_ids)
    (total,) = conn.execute(
        f"SELECT count(*) FROM {schema}.deliveries d WHERE {where}", params
    ).fetchone() or (0,)
    rows = conn.execute(
        f"""SELECT d.lead_id, d.channel, l.contact, d.provider, d.error_code, d.error_message, d.attempts,
                   d.finished_at
              FROM {schema}.deliveries d JOIN {schema}.leads l ON l.id = d.lead_id
             WHERE {where} ORDER BY d.finished_at, d.lead_id LIMIT %(limit)s""",
        {**params, "limit": limit},
    ).fetchall()
    return int(total), [DoubtfulLead(*row) for row in rows]


def requeue_doubtful(
    conn: psycopg.Connection, namespace: str, channels: Sequence[str], lead_ids: Sequence[int] | None
) -> list[tuple[int, str]]:
    """Put in-doubt leads back to ``queued``; return the (lead id, channel) of each."""
    where, params = _selection(channels, lead_ids)
    return conn.execute(
        f"UPDATE {quoted_schema(namespace)}.deliveries d SET {_REQUEUED} WHERE {where} "
        "RETURNING d.lead_id, d.channel",
        params,
    ).fetchall()


def resolve_doubtful(
    conn: psycopg.Connection,
    namespace: str,
    channels: Sequence[str],
    lead_ids: Sequence[int] | None,
    verdict: str,
    note: str,
) -> list[tuple[int, str]]:
    """Finish in-doubt leads as ``verdict`` (sent or failed): ``error_code`` becomes ``operator`` and
    ``error_message`` says the verdict, the note and why the lead was in doubt. Return the (lead id,
    channel) of each."""
    where, params = _selection(channels, lead_ids)
    said = f"resolved as {verdict} by the operator" + (f": {note}" if note else "")
    return conn.execute(
        f"""UPDATE {quoted_schema(namespace)}.deliveries d
               SET status = %(verdict)s, finished_at = now(), error_code = 'operator',
                   error_message = %(said)s || ' (was in doubt: '
                       || concat_ws(': ', d.error_code, coalesce(d.error_message, 'no answer')) || ')'
             WHERE {where} RETURNING d.lead_id, d.channel""",
        {**params, "verdict": verdict, "said": said},
    ).fetchall()
