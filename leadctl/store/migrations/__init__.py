"""Versioned schema migrations, applied automatically in the namespace's own schema.

Each migration is a file of this folder, ``NNNN_what_it_does.sql``, applied in the order of its
number ``NNNN`` (its version). In it, ``{schema}`` stands for the namespace's schema: it is replaced
by the schema's name as a quoted identifier (``psycopg.sql.Identifier``), never pasted in as text.
Migrations run under an advisory lock, so twenty workers starting at once apply each one exactly
once, and ``schema_migrations`` records the versions applied. ``store/schema.sql`` shows the schema
they build, as one readable file (tests/store/test_schema.py checks that the two agree).
"""

from __future__ import annotations

import zlib
from importlib import resources
from typing import NamedTuple

import psycopg
from psycopg import sql

SCHEMA = "{schema}"
"""The stand-in for the namespace's schema in the .sql files."""


class Migration(NamedTuple):
    """One migration file: its version and its SQL (with ``{schema}`` in it)."""

    version: int
    sql: str


def _load() -> tuple[Migration, ...]:
    files = [f for f in resources.files(__name__).iterdir() if f.name.endswith(".sql")]
    found = sorted(Migration(int(f.name.split("_", 1)[0]), f.read_text(encoding="utf-8")) for f in files)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the migration files of {__name__} must be numbered 1, 2, 3...: {versions}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()


def in_schema(text: str, namespace: str) -> sql.Composed:
    """``text`` with each ``{schema}`` replaced by the namespace's schema as a quoted identifier."""
    pieces: list[sql.Composable] = []
    for i, part in enumerate(text.split(SCHEMA)):
        if i:
            pieces.append(sql.Identifier(namespace))
        pieces.append(sql.SQL(part))
    return sql.Composed(pieces)


def quoted_schema(namespace: str) -> str:
    """The schema's name as a quoted SQL identifier, for the repositories' statements."""
    return sql.Identifier(namespace).as_string()


def migrate(conn: psycopg.Connection, namespace: str) -> int:
    """Bring the namespace's schema up to date; return how many migrations were applied."""
    lock_key = zlib.crc32(f"leadctl:{namespace}".encode())
    applied = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        conn.execute(in_schema("CREATE SCHEMA IF NOT EXISTS {schema}", namespace))
        conn.execute(
            in_schema(
                "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                namespace,
            )
        )
        done = {
            row[0]
            for row in conn.execute(in_schema("SELECT version FROM {schema}.schema_migrations", namespace))
        }
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            conn.execute(in_schema(migration.sql, namespace))
            conn.execute(
                in_schema("INSERT INTO {schema}.schema_migrations (version) VALUES (%s)", namespace),
                (migration.version,),
            )
            applied += 1
    return applied


def drop_namespace(conn: psycopg.Connection, namespace: str) -> None:
    """Remove the namespace's schema and everything in it."""
    conn.execute(in_schema("DROP SCHEMA IF EXISTS {schema} CASCADE", namespace))
