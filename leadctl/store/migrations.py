"""Versioned schema migrations, applied automatically in the namespace's own schema.

Each migration is a (version, SQL) pair; ``{schema}`` is replaced by the quoted schema name. They
run under an advisory lock, so twenty workers starting at once apply each one exactly once.
"""

from __future__ import annotations

import zlib

import psycopg

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE {schema}.leads (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            channel     text NOT NULL,
            contact     text NOT NULL,
            name        text NOT NULL DEFAULT '',
            phone       text,
            email       text,
            fields      jsonb NOT NULL DEFAULT '{{}}',
            campaign    text NOT NULL,
            source      text,
            source_line integer,
            created_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (channel, contact)
        );
        CREATE TABLE {schema}.deliveries (
            lead_id             bigint PRIMARY KEY REFERENCES {schema}.leads (id) ON DELETE CASCADE,
            channel             text NOT NULL,
            campaign            text NOT NULL,
            status              text NOT NULL CHECK (status IN
                ('queued', 'sending', 'sent', 'failed', 'dead', 'in_doubt', 'suppressed')),
            attempts            integer NOT NULL DEFAULT 0,
            provider            text,
            provider_message_id text,
            error_code          text,
            error_message       text,
            worker              text,
            queued_at           timestamptz NOT NULL DEFAULT now(),
            claimed_at          timestamptz,
            finished_at         timestamptz
        );
        CREATE INDEX deliveries_channel_status ON {schema}.deliveries (channel, status);
        CREATE INDEX deliveries_provider_message_id ON {schema}.deliveries (provider_message_id)
            WHERE provider_message_id IS NOT NULL;
        CREATE TABLE {schema}.suppressions (
            contact    text NOT NULL,
            channel    text NOT NULL DEFAULT '*',
            reason     text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (contact, channel)
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE {schema}.deliveries ADD COLUMN segments integer;
        """,
    ),
    (
        3,
        """
        ALTER TABLE {schema}.deliveries
            ADD COLUMN delivery_status text CHECK (delivery_status IN
                ('sent', 'delivered', 'read', 'undelivered', 'bounced')),
            ADD COLUMN delivery_error text,
            ADD COLUMN delivered_at timestamptz,
            ADD COLUMN read_at timestamptz,
            ADD COLUMN not_before timestamptz;
        CREATE TABLE {schema}.webhook_events (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider    text NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('status', 'optout')),
            message_id  text,
            lead_id     bigint,
            status      text,
            error       text,
            contact     text,
            channel     text,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            payload     jsonb NOT NULL DEFAULT '{{}}'
        );
        CREATE INDEX webhook_events_unmatched ON {schema}.webhook_events (received_at) WHERE kind = 'status';
        CREATE INDEX webhook_events_contact ON {schema}.webhook_events (contact) WHERE contact IS NOT NULL;
        CREATE INDEX webhook_events_message_id ON {schema}.webhook_events (message_id)
            WHERE message_id IS NOT NULL;
        CREATE UNIQUE INDEX webhook_events_optout_once
            ON {schema}.webhook_events (provider, message_id, contact) WHERE kind = 'optout';
        CREATE TABLE {schema}.tombstones (
            digest     text PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE {schema}.secrets (name text PRIMARY KEY, value bytea NOT NULL);
        INSERT INTO {schema}.secrets (name, value)
            VALUES ('contact_salt', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
        """,
    ),
    (
        # At 100M deliveries: `stats` reads counts kept by a statement-level trigger instead of
        # scanning every delivery (2.7 s at 10M rows -> 2 ms), in-flight and deferred leads through
        # small partial indexes, and `leadctl prune` finds old finished leads through an index.
        # Counts are split in 16 shards (by backend) so concurrent workers do not queue on one row.
        4,
        """
        CREATE TABLE {schema}.delivery_counts (
            channel         text NOT NULL,
            campaign        text NOT NULL,
            provider        text NOT NULL,
            status          text NOT NULL,
            delivery_status text NOT NULL,
            shard           smallint NOT NULL,
            leads           bigint NOT NULL,
            PRIMARY KEY (channel, campaign, provider, status, delivery_status, shard)
        );
        CREATE FUNCTION {schema}.count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, coalesce(provider, ''), status, coalesce(delivery_status, ''),
                       pg_backend_pid() % 16, count(*)
                  FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, coalesce(provider, ''), status, coalesce(delivery_status, ''),
                       pg_backend_pid() % 16, -count(*)
                  FROM old_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            ELSE
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
                  FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                               coalesce(delivery_status, '') AS delivery_status, 1 AS n FROM new_rows
                        UNION ALL
                        SELECT channel, campaign, coalesce(provider, ''), status,
                               coalesce(delivery_status, ''), -1 FROM old_rows) changed
                 GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON {schema}.deliveries
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();
        CREATE TRIGGER deliveries_counted_update AFTER UPDATE ON {schema}.deliveries
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();
        CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON {schema}.deliveries
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();
        INSERT INTO {schema}.delivery_counts
        SELECT channel, campaign, coalesce(provider, ''), status, coalesce(delivery_status, ''), 0, count(*)
          FROM {schema}.deliveries GROUP BY 1, 2, 3, 4, 5;
        CREATE INDEX deliveries_sending ON {schema}.deliveries (claimed_at) WHERE status = 'sending';
        CREATE INDEX deliveries_deferred ON {schema}.deliveries (not_before)
            WHERE status = 'queued' AND not_before IS NOT NULL;
        CREATE INDEX deliveries_finished_at ON {schema}.deliveries ((coalesce(finished_at, queued_at)))
            WHERE status IN ('sent', 'failed', 'dead', 'in_doubt', 'suppressed');
        """,
    ),
    (
        # The hot paths write fewer index entries: every claim and every outcome moved the row in
        # (channel, status), an index nothing reads any more (counts come from delivery_counts,
        # in-flight and deferred leads from partial indexes, `doubt list` from a new small one; `requeue`,
        # a recovery command, scans); and ingest no longer runs the foreign key's row-level check for
        # each new delivery. A lead's delivery still goes with it: one statement-level trigger deletes
        # the deliveries of the leads a statement deleted.
        5,
        """
        DROP INDEX {schema}.deliveries_channel_status;
        CREATE INDEX deliveries_in_doubt ON {schema}.deliveries (channel) WHERE status = 'in_doubt';
        ALTER TABLE {schema}.deliveries DROP CONSTRAINT deliveries_lead_id_fkey;
        CREATE FUNCTION {schema}.delete_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {schema}.deliveries d USING gone WHERE d.lead_id = gone.id;
            RETURN NULL;
        END $$;
        CREATE TRIGGER leads_deleted AFTER DELETE ON {schema}.leads
            REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.delete_deliveries();
        """,
    ),
    (
        # Contacts and channels compare byte by byte (COLLATE "C"): ingest's de-duplicating insert
        # spends an eighth of its PostgreSQL time in locale-aware comparisons in the (channel,
        # contact) index otherwise (more under a non-C database locale). Equality is unchanged: a
        # deterministic collation is equal only for equal bytes. The suppression list's columns
        # follow, as they are compared with these. Rebuilds the two indexes.
        6,
        """
        ALTER TABLE {schema}.leads
            ALTER channel TYPE text COLLATE "C", ALTER contact TYPE text COLLATE "C";
        ALTER TABLE {schema}.suppressions
            ALTER contact TYPE text COLLATE "C", ALTER channel TYPE text COLLATE "C";
        """,
    ),
    (
        # A lead's deliveries row is created when it is first claimed (or at ingest, when its contact
        # is suppressed): a lead without one is queued. Ingest writes one row per lead instead of
        # two, a quarter of its PostgreSQL time. The counts follow: a new lead counts as queued
        # (a trigger on leads), a new deliveries row moves its lead from queued to its status, a
        # deleted one moves it back when the lead remains, and a deleted lead without one leaves
        # the queued count. ``lead_deliveries`` shows every lead's delivery, created or not.
        7,
        """
        CREATE OR REPLACE FUNCTION {schema}.count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
                  FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                               coalesce(delivery_status, '') AS delivery_status, 1 AS n FROM new_rows
                        UNION ALL
                        SELECT channel, campaign, '', 'queued', '', -1 FROM new_rows) changed
                 GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
                  FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                               coalesce(delivery_status, '') AS delivery_status, -1 AS n FROM old_rows
                        UNION ALL
                        SELECT o.channel, o.campaign, '', 'queued', '', 1 FROM old_rows o
                         WHERE EXISTS (SELECT FROM {schema}.leads l WHERE l.id = o.lead_id)) changed
                 GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            ELSE
                INSERT INTO {schema}.delivery_counts AS c
                SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
                  FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                               coalesce(delivery_status, '') AS delivery_status, 1 AS n FROM new_rows
                        UNION ALL
                        SELECT channel, campaign, coalesce(provider, ''), status,
                               coalesce(delivery_status, ''), -1 FROM old_rows) changed
                 GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
                ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
                DO UPDATE SET leads = c.leads + excluded.leads;
            END IF;
            RETURN NULL;
        END $$;
        CREATE FUNCTION {schema}.count_leads() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.delivery_counts AS c
            SELECT channel, campaign, '', 'queued', '', pg_backend_pid() % 16, count(*)
              FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
            DO UPDATE SET leads = c.leads + excluded.leads;
            RETURN NULL;
        END $$;
        CREATE TRIGGER leads_counted_insert AFTER INSERT ON {schema}.leads
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_leads();
        CREATE OR REPLACE FUNCTION {schema}.delete_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {schema}.delivery_counts AS c
            SELECT g.channel, g.campaign, '', 'queued', '', pg_backend_pid() % 16, -count(*)
              FROM gone g WHERE NOT EXISTS (SELECT FROM {schema}.deliveries d WHERE d.lead_id = g.id)
             GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
            DO UPDATE SET leads = c.leads + excluded.leads;
            DELETE FROM {schema}.deliveries d USING gone WHERE d.lead_id = gone.id;
            RETURN NULL;
        END $$;
        CREATE VIEW {schema}.lead_deliveries AS
        SELECT l.id AS lead_id, l.channel, l.campaign, coalesce(d.status, 'queued') AS status,
               coalesce(d.attempts, 0) AS attempts, d.provider, d.provider_message_id, d.error_code,
               d.error_message, d.worker, coalesce(d.queued_at, l.created_at) AS queued_at, d.claimed_at,
               d.finished_at, d.segments, d.delivery_status, d.delivery_error, d.delivered_at, d.read_at,
               d.not_before
          FROM {schema}.leads l LEFT JOIN {schema}.deliveries d ON d.lead_id = l.id;
        """,
    ),
)


def quoted_schema(namespace: str) -> str:
    """The schema's SQL name; namespaces are validated identifiers, so quoting is enough."""
    return f'"{namespace}"'


def migrate(conn: psycopg.Connection, namespace: str) -> int:
    """Bring the namespace's schema up to date; return how many migrations were applied."""
    schema = quoted_schema(namespace)
    lock_key = zlib.crc32(f"leadctl:{namespace}".encode())
    applied = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute(f"SELECT version FROM {schema}.schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            conn.execute(sql.format(schema=schema))
            conn.execute(f"INSERT INTO {schema}.schema_migrations (version) VALUES (%s)", (version,))
            applied += 1
    return applied


def drop_namespace(conn: psycopg.Connection, namespace: str) -> None:
    """Remove the namespace's schema and everything in it."""
    conn.execute(f"DROP SCHEMA IF EXISTS {quoted_schema(namespace)} CASCADE")
