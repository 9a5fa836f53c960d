"""The tombstone digest computed in SQL (store.pseudonyms) is the one Python computes
(compliance.pseudonym): sha256(salt || lower(contact)) in hex."""

from __future__ import annotations

import psycopg

from leadctl.compliance.pseudonym import contact_digest
from leadctl.store.erasure import PersonalData
from leadctl.store.migrations import in_schema, migrate


def test_a_tombstone_is_the_contacts_salted_digest(pg: psycopg.Connection, namespace: str) -> None:
    migrate(pg, namespace)
    PersonalData(namespace).erase(pg, "Ana.Souza@Example.com")
    (salt,) = pg.execute(
        in_schema("SELECT value FROM {schema}.secrets WHERE name = 'contact_salt'", namespace)
    ).fetchone() or (None,)
    tombstones = pg.execute(in_schema("SELECT digest FROM {schema}.tombstones", namespace)).fetchall()
    assert tombstones == [(contact_digest(bytes(salt), "ana.souza@example.com"),)]
