"""The send claim and delivery outcomes: how PostgreSQL guarantees no lead is sent twice.

A lead without a deliveries row is ``queued`` (ingest writes none, see store.leads). A worker
claims a batch (``queued`` -> ``sending``: the row is created, or a ``queued`` one, deferred or
requeued, is updated) in one statement before calling the provider, and records the outcomes in one
statement after. An entry whose lead is already ``sending`` when it is read again was claimed by a
worker that died mid-send: its outcome is unknown, so it becomes ``in_doubt``, never resent. A lead
whose contact was put on the suppression list after it was queued is marked ``suppressed`` by the
claim itself (same statement), never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from leadctl.records import Status
from leadctl.store.migrations import quoted_schema

STATUSES: tuple[Status, ...] = (
    Status.QUEUED,
    Status.SENDING,
    Status.SENT,
    Status.FAILED,
    Status.DEAD,
    Status.IN_DOUBT,
    Status.SUPPRESSED,
)
"""The statuses a ``deliveries`` row holds."""


@dataclass(frozen=True, slots=True)
class ClaimedLead:
    """A lead this worker now owns the send of, with what the template needs."""

    lead_id: int
    contact: str
    name: str
    campaign: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed send; the usual ones have named constructors below."""

    lead_id: int
    status: Status
    provider: str | None = None
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    extra_attempts: int = 0
    campaign: str | None = None
    """The lead's campaign, for the per-campaign counters (not written by ``record``)."""
    segments: int | None = None
    """SMS segments billed (None for other channels)."""
    opted_out: bool = False
    """The provider says the contact unsubscribed: ``record`` adds it to the suppression list."""

    @classmethod
    def sent(
        cls,
        lead_id: int,
        provider: str | None,
        message_id: str,
        extra_attempts: int = 0,
        campaign: str | None = None,
        segments: int | None = None,
    ) -> Outcome:
        """The provider accepted the message: its id for it is ``message_id``."""
        return cls(
            lead_id,
            Status.SENT,
            provider,
            message_id,
            extra_attempts=extra_attempts,
            campaign=campaign,
            segments=segments,
        )

    @classmethod
    def released(cls, lead_id: int) -> Outcome:
        """The claim given back, certainly not sent (stopped before its request went out, or our
        credentials were refused): ``queued`` again, the claim's attempt not counted."""
        return cls(lead_id, Status.QUEUED, extra_attempts=-1)

    @classmethod
    def cut_off(cls, lead_id: int, provider: str | None, extra_attempts: int = 0) -> Outcome:
        """In doubt: the shutdown grace period ran out while the provider request was under way."""
        return cls(
            lead_id,
            Status.IN_DOUBT,
            provider,
            None,
            "shutdown",
            "stopped while the provider call was in flight",
            extra_attempts,
        )

    @classmethod
    def unrenderable(cls, lead_id: int, reason: str) -> Outcome:
        """Dead before any request: the lead's template cannot be rendered with its fields."""
        return cls(lead_id, Status.DEAD, error_code="template_error", error_message=reason)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """A claim's answer: leads to send, leads found mid-send (now in doubt), ids with no lead, and
    leads whose contact is now suppressed (marked so, not sent)."""

    claimed: list[ClaimedLead]
    in_doubt: list[int]
    unknown: list[int]
    suppressed: list[int] = field(default_factory=list)


class DeliveryStore:
    """Claim and outcome statements for one namespace, for asyncio worker processes."""

    def __init__(self, namespace: str) -> None:
        schema = quoted_schema(namespace)
        # One statement: the row is created (or a ``queued`` one taken) for each lead of the batch;
        # a lead another worker claimed meanwhile conflicts, waits for its commit and is skipped. A
        # suppressed contact's lead becomes ``suppressed`` instead of ``sending``. The suppression
        # list is probed only when it is not empty (an InitPlan run once per statement). Leads are
        # found by primary key only: ``IS TRUE`` keeps the planner from also reading every lead of
        # the channel in the (channel, contact) index, as it did with stale statistics.
        self._claim = f"""
            WITH candidate AS (
                SELECT l.id, l.channel, l.campaign, l.created_at, x.suppressed
                  FROM {schema}.leads l, LATERAL (
                       SELECT CASE WHEN (SELECT EXISTS (SELECT FROM {schema}.suppressions)) THEN EXISTS (
                           SELECT FROM {schema}.suppressions s
                            WHERE s.contact = l.contact AND s.channel IN (l.channel, '*')
                       ) ELSE false END AS suppressed
                       OFFSET 0  -- evaluated once per lead, not once per use
                  ) x
                 WHERE l.id = ANY(%(ids)s::bigint[]) AND (l.channel = %(channel)s) IS TRUE
                   FOR KEY SHARE OF l  -- a lead deleted meanwhile (forget) is not claimed, nor left a row
            ), claimed AS (
                INSERT INTO {schema}.deliveries AS d (lead_id, channel, campaign, status, attempts,
                       queued_at, claimed_at, worker, finished_at, error_code, error_message)
                SELECT id, channel, campaign, CASE WHEN suppressed THEN 'suppressed' ELSE 'sending' END,
                       CASE WHEN suppressed THEN 0 ELSE 1 END, created_at, now(), %(worker)s,
                       CASE WHEN suppressed THEN now() END, CASE WHEN suppressed THEN 'suppressed' END,
                       CASE WHEN suppressed
                           THEN 'the contact was put on the suppression list after it was queued' END
                  FROM candidate
                    ON CONFLICT (lead_id) DO UPDATE
                   SET status = excluded.status, attempts = d.attempts + excluded.attempts,
                       claimed_at = excluded.claimed_at, worker = excluded.worker,
                       finished_at = coalesce(excluded.finished_at, d.finished_at),
                       error_code = coalesce(excluded.error_code, d.error_code),
                       error_message = coalesce(excluded.error_message, d.error_message)
                 WHERE d.status = 'queued' OR (d.status = 'sending' AND d.worker = excluded.worker)
             RETURNING d.lead_id, d.status = 'suppressed' AS suppressed
            )
            SELECT c.lead_id, l.contact, l.name, l.campaign, l.fields, c.suppressed
              FROM claimed c JOIN {schema}.leads l ON l.id = c.lead_id"""
        self._doubt = f"""
            UPDATE {schema}.deliveries SET status = 'in_doubt', finished_at = now(),
                   error_code = 'claimed_unfinished',
                   error_message = 'a worker claimed this send and stopped before recording its outcome'
             WHERE lead_id = ANY(%s::bigint[]) AND (status = 'sending') IS TRUE
         RETURNING lead_id"""
        self._known = f"SELECT id FROM {schema}.leads WHERE id = ANY(%s::bigint[])"
        # ``(status = 'sending') IS TRUE`` is the plain test written so that the planner cannot answer
        # it from the partial index deliveries_sending: that index also holds every claim since the
        # last vacuum, so scanning it made each batch's cost grow with all the leads sent before;
        # the primary key finds the batch's rows directly.
        self._record = f"""
            UPDATE {schema}.deliveries d
               SET status = v.status, provider = v.provider, provider_message_id = v.message_id,
                   error_code = v.error_code, error_message = v.error_message,
                   attempts = d.attempts + v.extra_attempts, segments = v.segments, finished_at = now()
              FROM json_to_recordset(%s::json)
                   AS v(lead_id bigint, status text, provider text, message_id text, error_code text,
                        error_message text, extra_attempts integer, segments integer)
             WHERE d.lead_id = v.lead_id AND (d.status = 'sending') IS TRUE"""
        self._suppress = f"""
            INSERT INTO {schema}.suppressions (contact, channel, reason)
            SELECT l.contact, l.channel, v.reason
              FROM unnest(%s::bigint[], %s::text[]) AS v(lead_id, reason)
              JOIN {schema}.leads l ON l.id = v.lead_id
                ON CONFLICT (contact, channel) DO NOTHING"""

    async def claim(
        self, conn: psycopg.AsyncConnection, channel: str, lead_ids: Sequence[int], worker: str
    ) -> ClaimResult:
        """Claim the sends of ``lead_ids``; leads already sent or finished are simply not returned.

        A lead this same worker claimed but never started (its claim's commit was lost with the
        connection) is claimed again: worker names are unique per process, and the caller must not
        pass the leads it has in flight.
        """
        ids = list(lead_ids)
        # one statement, so one round trip and atomic by itself on an autocommit connection; the
        # leads it did not take are judged after it (a lost commit is re-claimed, see above)
        cur = await conn.execute(self._claim, {"ids": id_array(ids), "channel": channel, "worker": worker})
        rows = await cur.fetchall()
        claimed = [ClaimedLead(r[0], r[1], r[2], r[3], r[4]) for r in rows if not r[5]]
        suppressed = [r[0] for r in rows if r[5]]
        rest = list(set(ids) - {r[0] for r in rows})
        in_doubt: list[int] = []
        unknown: list[int] = []
        if rest:
            cur = await conn.execute(self._doubt, (id_array(rest),))
            in_doubt = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute(self._known, (id_array(rest),))
            known = {r[0] for r in await cur.fetchall()}
            unknown = [lead_id for lead_id in rest if lead_id not in known]
        return ClaimResult(claimed, in_doubt, unknown, suppressed)

    async def record(self, conn: psycopg.AsyncConnection, outcomes: Sequence[Outcome]) -> None:
        """Record many outcomes in one statement; contacts that opted out are added to the
        suppression list (on the lead's channel) in the same transaction."""
        if not outcomes:
            return
        opted_out = [o for o in outcomes if o.opted_out]
        if opted_out:
            async with conn.transaction():
                await self._record_outcomes(conn, outcomes)
                reasons = [f"opted out at {o.provider or 'the provider'} ({o.error_code})" for o in opted_out]
                await conn.execute(self._suppress, ([o.lead_id for o in opted_out], reasons))
        else:
            await self._record_outcomes(conn, outcomes)

    async def _record_outcomes(self, conn: psycopg.AsyncConnection, outcomes: Sequence[Outcome]) -> None:
        rows = [
            {
                "lead_id": o.lead_id,
                "status": o.status,
                "provider": o.provider,
                "message_id": o.provider_message_id,
                "error_code": o.error_code,
                "error_message": o.error_message,
                "extra_attempts": o.extra_attempts,
                "segments": o.segments,
            }
            for o in outcomes
        ]
        await conn.execute(self._record, (orjson.dumps(rows).decode(),))


def id_array(ids: Sequence[int]) -> str:
    """Lead ids as one PostgreSQL array literal: dumped by ``join`` in C, not element by element."""
    return "{" + ",".join(map(str, ids)) + "}"


def status_counts(conn: psycopg.Connection, namespace: str) -> dict[str, dict[str, int]]:
    """Leads per channel and status, every status present (zero when none)."""
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"SELECT channel, status, count(*) FROM {schema}.lead_deliveries GROUP BY 1, 2"
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for channel, status, count in rows:
        counts.setdefault(channel, dict.fromkeys(STATUSES, 0))[status] = count
    return counts
