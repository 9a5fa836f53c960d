"""store/schema.sql is the schema the migrations build: the same tables, columns, indexes,
constraints, views, functions and triggers, read from PostgreSQL's catalog."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from importlib import resources

import psycopg
import pytest

from leadctl.store.migrations import MIGRATIONS, drop_namespace, in_schema, migrate

SCHEMA_SQL = resources.files("leadctl.store").joinpath("schema.sql").read_text(encoding="utf-8")

# What the catalog says about one schema, one query per kind of object; each row is keyed by its
# first column(s) and compared as text, with the schema's name replaced by {schema}.
CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.relpersistence::text, c.reloptions::text
          FROM pg_class c WHERE c.relnamespace = %(oid)s""",
    "columns": """
        SELECT c.relname || '.' || a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), coll.collname, a.attidentity::text,
               a.attgenerated::text
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
         WHERE c.relnamespace = %(oid)s AND c.relkind IN ('r', 'v') AND a.attnum > 0
           AND NOT a.attisdropped""",
    "constraints": """
        SELECT c.relname || '.' || con.conname, con.contype::text, pg_get_constraintdef(con.oid)
          FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid WHERE con.connamespace = %(oid)s""",
    "indexes": "SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = %(name)s",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = %(name)s",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, cycle,
               cache_size
          FROM pg_sequences WHERE schemaname = %(name)s""",
    "functions": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_function_result(p.oid), l.lanname, p.provolatile::text, p.prosecdef,
               p.proconfig::text, regexp_replace(trim(p.prosrc), '\\s+', ' ', 'g')
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = %(oid)s""",
    "triggers": """
        SELECT c.relname || '.' || t.tgname, t.tgenabled::text, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = %(oid)s AND NOT t.tgisinternal""",
}


def catalog(conn: psycopg.Connection, namespace: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Every kind of object of the namespace's schema: name -> its definition, schema name normalised."""
    row = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (namespace,)).fetchone()
    assert row is not None, f"no schema {namespace}"
    params = {"oid": row[0], "name": namespace}
    name = re.compile(rf'"{namespace}"|\b{namespace}\b')

    def normal(value: object) -> str:
        return name.sub("{schema}", str(value))

    return {
        kind: {normal(key): tuple(map(normal, rest)) for key, *rest in conn.execute(query, params)}
        for kind, query in CATALOG.items()
    }


def data(conn: psycopg.Connection, namespace: str) -> dict[str, list[tuple[object, ...]]]:
    """The rows a schema starts with: its migration versions and its secrets (by name and size)."""
    return {
        "versions": conn.execute(
            in_schema("SELECT version FROM {schema}.schema_migrations ORDER BY 1", namespace)
        ).fetchall(),
        "secrets": conn.execute(
            in_schema("SELECT name, octet_length(value) FROM {schema}.secrets ORDER BY 1", namespace)
        ).fetchall(),
    }


@pytest.fixture
def from_schema_sql(pg: psycopg.Connection) -> Iterator[str]:
    """A second fresh namespace, built by applying store/schema.sql."""
    namespace = f"t_{uuid.uuid4().hex[:12]}"
    pg.execute(in_schema(SCHEMA_SQL, namespace))
    yield namespace
    drop_namespace(pg, namespace)


def test_schema_sql_is_what_the_migrations_build(
    pg: psycopg.Connection, namespace: str, from_schema_sql: str
) -> None:
    assert migrate(pg, namespace) == len(MIGRATIONS)
    migrated, written = catalog(pg, namespace), catalog(pg, from_schema_sql)
    for kind in CATALOG:
        assert written[kind] == migrated[kind], f"schema.sql and the migrations differ in their {kind}"
    assert set(migrated["relations"]) >= {"leads", "deliveries", "lead_deliveries", "webhook_events"}
    assert data(pg, from_schema_sql) == data(pg, namespace)
    assert data(pg, namespace)["versions"] == [(m.version,) for m in MIGRATIONS]
    assert migrate(pg, from_schema_sql) == 0  # schema.sql is at the latest version


@pytest.mark.parametrize(
    ("kind", "drift"),
    [
        ("columns", "ALTER TABLE {schema}.leads ALTER name SET DEFAULT 'Ana'"),
        ("columns", "ALTER TABLE {schema}.deliveries ALTER worker SET NOT NULL"),
        ("columns", 'ALTER TABLE {schema}.suppressions ALTER channel TYPE text COLLATE "default"'),
        ("columns", "ALTER TABLE {schema}.delivery_counts ALTER shard TYPE integer"),
        (
            "indexes",
            "DROP INDEX {schema}.deliveries_sending;"
            " CREATE INDEX deliveries_sending ON {schema}.deliveries (claimed_at)",
        ),
        ("constraints", "ALTER TABLE {schema}.webhook_events DROP CONSTRAINT webhook_events_kind_check"),
        (
            "views",
            "DROP VIEW {schema}.lead_deliveries; CREATE VIEW {schema}.lead_deliveries AS"
            " SELECT l.id AS lead_id, l.channel, l.campaign, 'queued'::text AS status FROM {schema}.leads l",
        ),
        (
            "functions",
            "CREATE OR REPLACE FUNCTION {schema}.count_leads() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN NULL; END $$",
        ),
        ("triggers", "DROP TRIGGER leads_counted_insert ON {schema}.leads"),
    ],
)
def test_the_comparison_sees_a_drift(
    pg: psycopg.Connection, from_schema_sql: str, kind: str, drift: str
) -> None:
    """Each kind of difference between schema.sql and the migrations fails the test above."""
    before = catalog(pg, from_schema_sql)
    pg.execute(in_schema(drift, from_schema_sql))
    assert catalog(pg, from_schema_sql)[kind] != before[kind]
