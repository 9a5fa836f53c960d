"""Connections to Redis and PostgreSQL, with unreachable servers turned into one-line errors (exit 3).

Every Redis client is made here: ``redis.cluster: true`` (or ``redis.nodes``) gives redis-py's cluster
client, else the single-server one. Both take the same commands as leadctl uses them: every key of a
multi-key command or Lua script shares one hash tag (leadctl.queue.keys), and pipelines are
non-transactional, which the cluster client splits per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from leadctl.config import Settings
from leadctl.errors import DependencyError
from leadctl.masking import mask_url
from leadctl.store.migrations import migrate

RedisClient = redis.Redis | RedisCluster
"""A synchronous client: one server or a cluster."""
AsyncRedisClient = aioredis.Redis | AsyncRedisCluster
"""An asyncio client: one server or a cluster."""

REDIS_OUTAGE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN, retries exhausted while slots move
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,  # a write reached a master that has just become a replica
    redis.exceptions.RedisClusterException,  # no reachable node, or slots uncovered during a failover
    OSError,
)
"""Errors that mean Redis (or part of a cluster) is away for now: wait and retry, never give up a lead."""


def redis_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is away for now: one of REDIS_OUTAGE, or uvloop's RuntimeError for a
    write to a socket the server has just closed (MagicStack/uvloop#506; asyncio's own loop raises a
    ConnectionError there, which redis-py passes on as one)."""
    return isinstance(exc, REDIS_OUTAGE) or (
        isinstance(exc, RuntimeError) and "the handler is closed" in str(exc)
    )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Redis and PostgreSQL are, configured or embedded (leadctl.local.services.resolve_endpoints)."""

    redis_url: str
    database_url: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__


def redis_unreachable(url: str, exc: BaseException) -> DependencyError:
    return DependencyError(f"Redis unreachable at {mask_url(url)}: {_first_line(exc)}")


def postgres_unreachable(url: str, exc: BaseException) -> DependencyError:
    return DependencyError(f"PostgreSQL unreachable at {mask_url(url)}: {_first_line(exc)}")


def _redis_options(settings: Settings) -> dict[str, object]:
    timeout = settings.redis.socket_timeout_ms / 1000
    return {
        "max_connections": settings.redis.max_connections,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }


def _startup_nodes(settings: Settings) -> list[tuple[str, int]]:
    nodes = []
    for node in settings.redis.nodes:
        host, _, port = node.rpartition(":")
        nodes.append((host, int(port)))
    return nodes


def redis_client(url: str, settings: Settings) -> RedisClient:
    """An unchecked synchronous client (the cluster client connects, and so may raise, at once)."""
    if settings.redis.cluster:
        nodes = [ClusterNode(host, port) for host, port in _startup_nodes(settings)]
        return RedisCluster.from_url(url, startup_nodes=nodes, **_redis_options(settings))
    return redis.Redis.from_url(url, **_redis_options(settings))


def async_redis_client(url: str, settings: Settings) -> AsyncRedisClient:
    """An unchecked asyncio client; it connects on first use."""
    if settings.redis.cluster:
        nodes = [AsyncClusterNode(host, port) for host, port in _startup_nodes(settings)]
        return AsyncRedisCluster.from_url(url, startup_nodes=nodes, **_redis_options(settings))
    return aioredis.Redis.from_url(url, **_redis_options(settings))


def open_redis(url: str, settings: Settings) -> RedisClient:
    """A checked synchronous Redis client."""
    try:
        client = redis_client(url, settings)
        client.ping()
    except (*REDIS_OUTAGE, redis.RedisError, ValueError) as exc:
        raise redis_unreachable(url, exc) from None
    return client


async def open_async_redis(url: str, settings: Settings) -> AsyncRedisClient:
    """A checked asyncio Redis client."""
    try:
        client = async_redis_client(url, settings)
        await client.ping()
    except (*REDIS_OUTAGE, redis.RedisError, ValueError) as exc:
        raise redis_unreachable(url, exc) from None
    return client


def _conn_kwargs(settings: Settings) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "connect_timeout": max(1, settings.database.connect_timeout_ms // 1000),
        "autocommit": True,
    }
    if settings.database.pgbouncer:  # transaction pooling: a prepared statement would meet another server
        kwargs["prepare_threshold"] = None
    return kwargs


def _set_statement_timeout(conn: psycopg.Connection, settings: Settings) -> None:
    """Session state, so not behind PgBouncer (``database.pgbouncer``): the role's setting applies there."""
    if not settings.database.pgbouncer:
        conn.execute(f"SET statement_timeout = {int(settings.database.statement_timeout_ms)}")


def open_postgres(url: str, settings: Settings) -> psycopg.Connection:
    """A checked synchronous connection with the namespace's schema migrated."""
    try:
        conn = psycopg.connect(url, **_conn_kwargs(settings))
        _set_statement_timeout(conn, settings)
        migrate(conn, settings.namespace)
    except psycopg.OperationalError as exc:
        raise postgres_unreachable(url, exc) from None
    return conn


async def open_async_pool(url: str, settings: Settings, max_size: int) -> AsyncConnectionPool:
    """An asyncio pool for a worker process; the schema must already be migrated."""

    async def configure(conn: psycopg.AsyncConnection) -> None:
        set_json_loads(orjson.loads, conn)  # claimed leads' fields, many per batch
        if not settings.database.pgbouncer:
            await conn.execute(f"SET statement_timeout = {int(settings.database.statement_timeout_ms)}")

    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs=_conn_kwargs(settings),
        configure=configure,
        timeout=settings.database.connect_timeout_ms / 1000,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=settings.database.connect_timeout_ms / 1000)
    except Exception as exc:
        await pool.close()
        raise postgres_unreachable(url, exc) from None
    return pool
