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
