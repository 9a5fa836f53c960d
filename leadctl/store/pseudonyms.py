"""Contact digests in SQL: the tombstones of erased contacts are salted hashes, computed by the
statements that write and check them (ingest's INSERT, erasure).

``encode(sha256(salt || lower(value)), 'hex')``, the same digest as
leadctl.compliance.pseudonym.contact_digest computes in Python. The salt is the namespace's own,
created at random by migration 3 in ``secrets``; it never leaves PostgreSQL.
"""

from __future__ import annotations

from leadctl.store.migrations import quoted_schema


def sql_digest(salt_sql: str, value_sql: str) -> str:
    """The digest of ``value_sql`` salted with ``salt_sql``, as a PostgreSQL expression."""
    return f"encode(sha256({salt_sql} || convert_to(lower({value_sql}), 'UTF8')), 'hex')"


def namespace_salt_sql(namespace: str) -> str:
    """A scalar subquery giving the namespace's salt."""
    return f"(SELECT value FROM {quoted_schema(namespace)}.secrets WHERE name = 'contact_salt')"
