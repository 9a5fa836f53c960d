"""Recording accepted leads in bulk: COPY into a staging table, then one INSERT that de-duplicates.

The INSERT skips contacts already recorded on their channel (``ON CONFLICT DO NOTHING``: a
duplicate, whether earlier in the same batch, in an earlier batch or in an earlier ingest), marks
the new leads whose contact is on the suppression list (they get their ``deliveries`` row,
``suppressed``, at once; the others are queued until a worker claims them, see
store.deliveries) and returns the new leads, all in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import psycopg

from leadctl.records import Lead
from leadctl.store.migrations import quoted_schema
from leadctl.store.pseudonyms import namespace_salt_sql, sql_digest

COPY_COLUMNS = ("channel", "contact", "name", "phone", "email", "fields", "campaign", "source_line")
"""The staging table's columns, in the order of ``record_copy``'s fields."""

# Created and dropped by each transaction (ON COMMIT DROP): no session state, so it is safe behind
# PgBouncer's transaction pooling (database.pgbouncer), and it costs under 0.5 ms a batch. JIT is
# off for the transaction: the INSERT's cost estimate for a batch of thousands of rows crosses
# jit_above_cost, and compiling its trivial expressions costs more than it saves.
_STAGE = """
SET LOCAL jit = off;
CREATE TEMP TABLE lead_stage (
    channel text, contact text, name text, phone text, email text,
    fields jsonb, campaign text, source_line integer
) ON COMMIT DROP
"""

_COPY = f"COPY lead_stage ({', '.join(COPY_COLUMNS)}) FROM STDIN"

# The suppression list is probed only when it is not empty (an InitPlan run once per statement);
# so are the tombstones of erased people (leadctl.compliance.erasure): a lead whose contact, phone
# or email was erased is not recorded (counted with the duplicates).
_RECORD = """
WITH new AS (
    INSERT INTO {schema}.leads (channel, contact, name, phone, email, fields, campaign, source, source_line)
    SELECT channel, contact, coalesce(name, ''), phone, email, fields, coalesce(campaign, ''),
           %(source)s, source_line
    FROM lead_stage
    WHERE CASE WHEN (SELECT EXISTS (SELECT FROM {schema}.tombstones)) THEN NOT EXISTS (
        SELECT FROM {schema}.tombstones t WHERE t.digest IN ({contact_digest}, {phone_digest}, {email_digest})
    ) ELSE true END
    ON CONFLICT (channel, contact) DO NOTHING
    RETURNING id, channel, contact, campaign
), marked AS (
    SELECT new.*, CASE WHEN (SELECT EXISTS (SELECT FROM {schema}.suppressions)) THEN EXISTS (
        SELECT FROM {schema}.suppressions s
        WHERE s.contact = new.contact AND s.channel IN (new.channel, '*')
    ) ELSE false END AS suppressed
    FROM new
), delivery AS (
    INSERT INTO {schema}.deliveries (lead_id, channel, campaign, status)
    SELECT id, channel, campaign, 'suppressed' FROM marked WHERE suppressed
)
"""

_EACH = _RECORD + "SELECT id, channel, suppressed FROM marked ORDER BY id"

_PER_CHANNEL = (
    _RECORD
    + """SELECT channel, count(*), count(*) FILTER (WHERE suppressed),
       coalesce(string_agg(id::text, ',' ORDER BY id) FILTER (WHERE NOT suppressed), '')
FROM marked GROUP BY channel"""
)


@dataclass(frozen=True, slots=True)
class RecordedLead:
    """A lead new to PostgreSQL: queue it unless its contact is suppressed."""

    lead_id: int
    channel: str
    suppressed: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """The new leads of one batch on one channel: how many, how many suppressed, and the ids to
    queue (the others) as comma-separated text in id order."""

    channel: str
    new: int
    suppressed: int
    to_queue: str


class LeadWriter:
    """Writes batches of leads for one namespace; duplicates of earlier leads are skipped by the database."""

    def __init__(self, namespace: str) -> None:
        schema = quoted_schema(namespace)
        salt = namespace_salt_sql(namespace)
        digests = {f"{column}_digest": sql_digest(salt, column) for column in ("contact", "phone", "email")}
        self._each = _EACH.format(schema=schema, **digests)
        self._per_channel = _PER_CHANNEL.format(schema=schema, **digests)

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
                            lead.line,
                        )
                    )
            cur.execute(self._each, {"source": source})
            return [RecordedLead(row[0], row[1], row[2]) for row in cur.fetchall()]

    def record_copy(self, conn: psycopg.Connection, data: str, source: str) -> list[Recorded]:
        """Record leads given as lines of COPY's text format (fields of ``COPY_COLUMNS``) in one
        transaction; return what was new, per channel. The bulk path of ``leadctl ingest``: no
        Python object per lead on this side."""
        if not data:
            return []
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_STAGE)
            with cur.copy(_COPY) as copy:
                copy.write(data)
            cur.execute(self._per_channel, {"source": source})
            return [Recorded(*row) for row in cur.fetchall()]
