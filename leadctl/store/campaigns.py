"""Leads by campaign: what a campaign-filtered run (leadctl.queue.sifting) asks PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import psycopg

from leadctl.store.deliveries import id_array
from leadctl.store.migrations import quoted_schema


async def leads_outside(
    conn: psycopg.AsyncConnection, namespace: str, lead_ids: Sequence[int], campaigns: Collection[str]
) -> set[int]:
    """Those of ``lead_ids`` whose campaign is none of ``campaigns`` (unknown leads are not)."""
    cur = await conn.execute(
        f"SELECT id FROM {quoted_schema(namespace)}.leads"
        " WHERE id = ANY(%s::bigint[]) AND campaign <> ALL(%s)",
        (id_array(lead_ids), list(campaigns)),
    )
    return {row[0] for row in await cur.fetchall()}
