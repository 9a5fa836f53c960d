"""`leadctl forget` and `leadctl export`: a person's data out of PostgreSQL and Redis (LGPD art. 18).

Forgetting a contact deletes their leads and deliveries, the webhook events about them and their
suppression entries from PostgreSQL (leadctl.store.erasure), then every trace in Redis: their
stream entries (which hold only lead ids: found by scanning the streams, removed with XACK +
XDEL), their deferred entries, dead letters and frequency-cap keys. What stays is a tombstone, the
contact's salted hash: ingest skips any lead whose contact, phone or email matches one, so a
re-import does not bring the person back, and the tombstone is what keeps them suppressed (a plain
suppression entry would keep the contact itself).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from leadctl.compliance.pseudonym import contact_digest, existing_caps_salt
from leadctl.config import CHANNELS, Settings
from leadctl.connections import Endpoints, RedisClient, open_postgres, open_redis
from leadctl.queue import keys, streams
from leadctl.store.erasure import PersonalData

SCAN_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` removed."""

    leads: int
    deliveries: int
    webhook_events: int
    suppressions: int
    stream_entries: int
    deferred: int
    dead_letters: int
    cap_keys: int
    tombstone: bool = True

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _stream_entries(client: RedisClient, key: str, field: bytes, wanted: set[bytes]) -> list[bytes]:
    """Ids of the entries of stream ``key`` whose ``field`` is one of ``wanted`` (XRANGE, page by page)."""
    found: list[bytes] = []
    start = "-"
    while True:
        page = client.xrange(key, min=start, count=SCAN_PAGE)
        found += [entry_id for entry_id, fields in page if fields.get(field) in wanted]
        if len(page) < SCAN_PAGE:
            return found
        start = "(" + page[-1][0].decode()


def _forget_in_redis(
    client: RedisClient, settings: Settings, contact: str, lead_ids: dict[str, list[int]]
) -> dict[str, int]:
    ns, partitions = settings.namespace, settings.redis.partitions
    removed = {"stream_entries": 0, "deferred": 0, "dead_letters": 0, "cap_keys": 0}
    for channel, ids in lead_ids.items():
        wanted = {str(i).encode() for i in ids}
        for partition in range(partitions):
            stream = keys.stream(ns, channel, partition)
            entries = _stream_entries(client, stream, streams.LEAD_FIELD, wanted)
            if entries:
                client.xack(stream, keys.GROUP, *entries)
                removed["stream_entries"] += int(client.xdel(stream, *entries))
            removed["deferred"] += int(client.zrem(keys.delayed(ns, channel, partition), *wanted))
        dead = keys.dead_letters(ns, channel)
        letters = _stream_entries(client, dead, b"lead", wanted)
        if letters:
            removed["dead_letters"] += int(client.xdel(dead, *letters))
    scope = settings.compliance.caps_scope or ns
    salt = existing_caps_salt(client, scope)
    if salt is not None:
        digest = contact_digest(salt, contact)
        removed["cap_keys"] = int(client.delete(*(keys.cap(scope, channel, digest) for channel in CHANNELS)))
    return removed


def forget(conn: psycopg.Connection, client: RedisClient, settings: Settings, contact: str) -> Forgotten:
    """Erase ``contact`` (E.164 phone or normalised email) everywhere; PostgreSQL first, then Redis."""
    contact = contact.lower()
    erased = PersonalData(settings.namespace).erase(conn, contact)
    in_redis = _forget_in_redis(client, settings, contact, erased.lead_ids)
    return Forgotten(erased.leads, erased.deliveries, erased.webhook_events, erased.suppressions, **in_redis)


def export(conn: psycopg.Connection, settings: Settings, contact: str) -> dict[str, Any]:
    """Everything leadctl keeps about ``contact``, as JSON-ready data."""
    return PersonalData(settings.namespace).export(conn, contact)


def forget_contact(settings: Settings, endpoints: Endpoints, contact: str) -> Forgotten:
    """`leadctl forget`: erase ``contact`` (as ``forget`` takes it) from PostgreSQL and Redis."""
    with open_postgres(endpoints.database_url, settings) as conn:
        client = open_redis(endpoints.redis_url, settings)
        try:
            return forget(conn, client, settings, contact)
        finally:
            client.close()


def export_contact(settings: Settings, endpoints: Endpoints, contact: str) -> dict[str, Any]:
    """`leadctl export`: everything the namespace keeps about ``contact``, as JSON-ready data."""
    with open_postgres(endpoints.database_url, settings) as conn:
        return export(conn, settings, contact)
