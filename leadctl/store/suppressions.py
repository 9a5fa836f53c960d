"""The suppression list: contacts never to be queued, on one channel or on all of them ('*').

Contacts are stored as ingest stores them (E.164 phones, normalised emails), so the INSERT in
store.leads matches them exactly. Each entry keeps its reason and when it was added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from leadctl.store.migrations import quoted_schema

ALL_CHANNELS = "*"


@dataclass(frozen=True, slots=True)
class Suppression:
    contact: str
    channel: str
    reason: str
    created_at: datetime


class SuppressionList:
    """The suppression list of one namespace."""

    def __init__(self, namespace: str) -> None:
        self._table = f"{quoted_schema(namespace)}.suppressions"

    def add(self, conn: psycopg.Connection, entries: Iterable[tuple[str, str]], reason: str) -> int:
        """Add (contact, channel) entries; return how many were new (an entry already listed keeps
        its reason and time)."""
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS suppression_stage (contact text, channel text) "
                "ON COMMIT DELETE ROWS"
            )
            with cur.copy("COPY suppression_stage (contact, channel) FROM STDIN") as copy:
                for entry in entries:
                    copy.write_row(entry)
            cur.execute(
                f"INSERT INTO {self._table} (contact, channel, reason) "
                "SELECT DISTINCT contact, channel, %s FROM suppression_stage "
                "ON CONFLICT (contact, channel) DO NOTHING",
                (reason,),
            )
            return cur.rowcount

    def remove(self, conn: psycopg.Connection, contacts: Sequence[str], channel: str | None) -> int:
        """Remove the contacts' entries on ``channel`` ('*' is the all-channels entry; None: every
        entry of each contact); return how many were removed."""
        if channel is None:
            cur = conn.execute(f"DELETE FROM {self._table} WHERE contact = ANY(%s)", (list(contacts),))
        else:
            cur = conn.execute(
                f"DELETE FROM {self._table} WHERE contact = ANY(%s) AND channel = %s",
                (list(contacts), channel),
            )
        return cur.rowcount

    def entries(
        self, conn: psycopg.Connection, channel: str | None = None, limit: int | None = None
    ) -> tuple[int, list[Suppression]]:
        """How many entries there are (on ``channel`` when given) and the newest ``limit`` of them."""
        where, params = ("WHERE channel = %s", [channel]) if channel is not None else ("", [])
        (total,) = conn.execute(f"SELECT count(*) FROM {self._table} {where}", params).fetchone() or (0,)
        rows = conn.execute(
            f"SELECT contact, channel, reason, created_at FROM {self._table} {where} "
            "ORDER BY created_at DESC, contact LIMIT %s",
            [*params, limit],
        ).fetchall()
        return int(total), [Suppression(*row) for row in rows]
