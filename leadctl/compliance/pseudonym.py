"""Salted hashes of contacts: what leadctl keeps instead of a phone or an email where it must not
keep the contact itself (erasure tombstones, frequency-cap key names).

``digest = sha256(salt || lower(contact))`` in hex, the same in Python and in SQL (an email's
local part is compared without case, as every mail provider does). Tombstones use the
namespace's salt, created at random by the schema migration and kept in PostgreSQL (ingest
computes digests in its INSERT, leadctl.store.pseudonyms); cap keys use their scope's salt, kept
in Redis so namespaces sharing a caps scope share it. A salt never leaves its server: a key name
or a tombstone alone does not give the contact back, though anyone holding both a digest and its
salt can test guesses.
"""

from __future__ import annotations

import hashlib
import os

import redis
import redis.asyncio as aioredis

from leadctl.queue import keys

SALT_BYTES = 32


def contact_digest(salt: bytes, contact: str) -> str:
    """The salted SHA-256 of a contact (E.164 phone or normalised email), in hex."""
    return hashlib.sha256(salt + contact.lower().encode()).hexdigest()


async def caps_salt(client: aioredis.Redis, scope: str) -> bytes:
    """The caps scope's salt, created on first use (SET NX: every host ends up with the same one)."""
    key = keys.caps_salt(scope)
    await client.set(key, os.urandom(SALT_BYTES), nx=True)
    salt = await client.get(key)
    assert salt is not None
    return bytes(salt)


def existing_caps_salt(client: redis.Redis, scope: str) -> bytes | None:
    """The caps scope's salt when one exists (no cap key can exist without it)."""
    salt = client.get(keys.caps_salt(scope))
    return bytes(salt) if salt is not None else None
