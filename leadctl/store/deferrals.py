"""Handing claimed sends back: leads a worker claimed but may not send yet (quiet hours, a frequency
cap) return to ``queued`` with the time they may go (``not_before``); leads a cap skips for good
become ``suppressed``. Run in the claim's own transaction, so a claim never outlives its verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from leadctl.store.migrations import quoted_schema


@dataclass(frozen=True, slots=True)
class Held:
    """A claimed lead not sent now: until ``not_before`` (epoch seconds), or never (None)."""

    lead_id: int
    not_before: float | None
    reason: str
    message: str


class Deferrals:
    """The hand-back statement of one namespace."""

    def __init__(self, namespace: str) -> None:
        self._release = f"""
            UPDATE {quoted_schema(namespace)}.deliveries d
               SET status = CASE WHEN v.not_before IS NULL THEN 'suppressed' ELSE 'queued' END,
                   attempts = d.attempts - 1, not_before = v.not_before,
                   error_code = v.reason, error_message = v.message,
                   claimed_at = CASE WHEN v.not_before IS NULL THEN d.claimed_at END,
                   finished_at = CASE WHEN v.not_before IS NULL THEN now() END
              FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[])
                   AS v(lead_id, not_before, reason, message)
             WHERE d.lead_id = v.lead_id AND (d.status = 'sending') IS TRUE AND d.worker = %s"""
        # (IS TRUE: found by primary key, see DeliveryStore's record)

    async def release(self, conn: psycopg.AsyncConnection, held: Sequence[Held], worker: str) -> None:
        """Hand ``held`` back in one statement (only leads this worker holds)."""
        if not held:
            return
        await conn.execute(
            self._release,
            (
                [h.lead_id for h in held],
                [
                    datetime.fromtimestamp(h.not_before, UTC) if h.not_before is not None else None
                    for h in held
                ],
                [h.reason for h in held],
                [h.message for h in held],
                worker,
            ),
        )
