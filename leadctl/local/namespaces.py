"""Removing a whole namespace: every Redis key under its prefix and its PostgreSQL schema.

For what lives in a namespace of its own and is thrown away after: the demo, benchmarks, tests.
"""

from __future__ import annotations

import psycopg
import redis

from leadctl.queue import keys
from leadctl.store.migrations import drop_namespace


def purge_namespace(client: redis.Redis, database_url: str, namespace: str) -> None:
    """Delete the namespace's Redis keys (on every node of a cluster) and drop its schema."""
    stale = list(client.scan_iter(match=keys.namespace_pattern(namespace), count=1000))
    for key in stale:  # one by one: on a cluster the keys live in different slots
        client.delete(key)
    with psycopg.connect(database_url, autocommit=True) as conn:
        drop_namespace(conn, namespace)
