"""Retention's statements (leadctl.ops.prune): the leads whose delivery finished before a cutoff.

A lead is old when its delivery is finished (sent, failed, dead, in doubt or suppressed) and finished
(or, suppressed at ingest, was queued) before the cutoff; queued and sending leads never are.
Deleting a lead deletes its delivery (the ``leads_deleted`` trigger).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from leadctl.store.migrations import quoted_schema

# coalesce(finished_at, queued_at) and the status list match the partial index deliveries_finished_at.
_OLD = (
    "status IN ('sent', 'failed', 'dead', 'in_doubt', 'suppressed') AND coalesce(finished_at, queued_at) < %s"
)


def count_finished_before(conn: psycopg.Connection, namespace: str, cutoff: datetime) -> dict[str, int]:
    """How many leads finished before ``cutoff``, per channel."""
    rows = conn.execute(
        f"SELECT channel, count(*) FROM {quoted_schema(namespace)}.deliveries WHERE {_OLD} GROUP BY 1",
        (cutoff,),
    ).fetchall()
    return dict(rows)


def delete_finished_before(
    conn: psycopg.Connection, namespace: str, cutoff: datetime, limit: int
) -> list[str]:
    """Delete up to ``limit`` leads finished before ``cutoff``, with their deliveries, in one
    statement; return the channel of each lead deleted."""
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"""DELETE FROM {schema}.leads l
             USING (SELECT lead_id FROM {schema}.deliveries WHERE {_OLD} LIMIT %s) doomed
             WHERE l.id = doomed.lead_id
         RETURNING l.channel""",
        (cutoff, limit),
    ).fetchall()
    return [channel for (channel,) in rows]
