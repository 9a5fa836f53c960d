"""Recording accepted leads in bulk: COPY into a staging table, then one INSERT that de-duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import psycopg

from leadctl.leads import Lead
from leadctl.store.migrations import quoted_schema

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS lead_stage (
    channel text, contact text, name text, phone text, email text,
    fields jsonb, campaign text, source text, source_line integer
) ON COMMIT DELETE ROWS
"""

_COPY = (
    "COPY lead_stage (channel, contact, name, phone, email, fields, campaign, source, source_line) FROM STDIN"
)

_INSERT = """
WITH new AS (
    INSERT INTO {schema}.leads (channel, contact, name, phone, email, fields, campaign, source, source_line)
    SELECT channel, contact, name, phone, email, fields, campaign, source, source_line FROM lead_stage
    ON CONFLICT (channel, contact) DO NOTHING
    RETURNING id, channel, contact, campaign
), marked AS (
    SELECT new.*, EXISTS (
        SELECT 1 FROM {schema}.suppressions s
        WHERE s.contact = new.contact AND s.channel IN (new.channel, '*')
    ) AS suppressed
    FROM new
), delivery AS (
    INSERT INTO {schema}.deliveries (lead_id, channel, campaign, status)
    SELECT id, channel, campaign, CASE WHEN suppressed THEN 'suppressed' ELSE 'queued' END FROM marked
)
SELECT id, channel, suppressed FROM marked
"""


@dataclass(frozen=True, slots=True)
class RecordedLead:
    """A lead new to PostgreSQL: queue it unless its contact is suppressed."""

    lead_id: int
    channel: str
    suppressed: bool


class LeadWriter:
    """Writes batches of leads for one namespace; duplicates of earlier leads are skipped by the database."""

    def __init__(self, namespace: str) -> None:
        self._insert = _INSERT.format(schema=quoted_schema(namespace))

    def record(self, conn: psycopg.Connection, leads: Sequence[Lead], source: str) -> list[RecordedLead]:
        """Record ``leads`` in one transaction; return those that were new (the rest were duplicates)."""
        if not leads:
            return []
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_STAGE)
            with cur.copy(_COPY) as copy:
                for lead in leads:
                    copy.write_row(
                        (
                            lead.channel,
                            lead.contact,
                            lead.name,
                            lead.phone,
                            lead.email,
                            orjson.dumps(lead.fields).decode(),
                            lead.campaign,
                            source,
                            lead.line,
                        )
                    )
            cur.execute(self._insert)
            return [RecordedLead(row[0], row[1], row[2]) for row in cur.fetchall()]
