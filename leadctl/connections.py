"""Connections to Redis and PostgreSQL, with unreachable servers turned into one-line errors (exit 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import redis
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from leadctl.config import Settings
from leadctl.errors import DependencyError
from leadctl.masking import mask_url
from leadctl.store.migrations import migrate


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Redis and PostgreSQL are, configured or embedded."""

    redis_url: str
    database_url: str


def resolve_endpoints(settings: Settings, announce: Callable[[str], None]) -> Endpoints:
    """The configured URLs, or embedded servers started on demand (see leadctl.services)."""
    if settings.redis.url and settings.database.url:
        return Endpoints(settings.redis.url, settings.database.url)
    from leadctl.services import resolve_urls

    redis_url, database_url = resolve_urls(settings, announce)
    return Endpoints(redis_url, database_url)


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


def open_redis(url: str, settings: Settings) -> redis.Redis:
    """A checked synchronous Redis client."""
    try:
        client = redis.Redis.from_url(url, **_redis_options(settings))
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise redis_unreachable(url, exc) from None
    return client


async def open_async_redis(url: str, settings: Settings) -> aioredis.Redis:
    """A checked asyncio Redis client."""
    try:
        client = aioredis.Redis.from_url(url, **_redis_options(settings))
        await client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise redis_unreachable(url, exc) from None
    return client


def _conn_kwargs(settings: Settings) -> dict[str, object]:
    return {"connect_timeout": max(1, settings.database.connect_timeout_ms // 1000), "autocommit": True}


def _statement_timeout(settings: Settings) -> str:
    return f"SET statement_timeout = {int(settings.database.statement_timeout_ms)}"


def open_postgres(url: str, settings: Settings) -> psycopg.Connection:
    """A checked synchronous connection with the namespace's schema migrated."""
    try:
        conn = psycopg.connect(url, **_conn_kwargs(settings))
        conn.execute(_statement_timeout(settings))
        migrate(conn, settings.namespace)
    except psycopg.OperationalError as exc:
        raise postgres_unreachable(url, exc) from None
    return conn


def open_pool(url: str, settings: Settings, max_size: int | None = None) -> ConnectionPool:
    """A synchronous pool (schema migrated first); ``max_size`` defaults to ``database.pool_size``."""
    open_postgres(url, settings).close()

    def configure(conn: psycopg.Connection) -> None:
        conn.execute(_statement_timeout(settings))

    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size or settings.database.pool_size,
        kwargs=_conn_kwargs(settings),
        configure=configure,
        timeout=settings.database.connect_timeout_ms / 1000,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=settings.database.connect_timeout_ms / 1000)
    except Exception as exc:
        pool.close()
        raise postgres_unreachable(url, exc) from None
    return pool


async def open_async_pool(url: str, settings: Settings, max_size: int) -> AsyncConnectionPool:
    """An asyncio pool for a worker process; the schema must already be migrated."""

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(_statement_timeout(settings))

    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs=_conn_kwargs(settings),
        configure=configure,
        check=AsyncConnectionPool.check_connection,
        timeout=settings.database.connect_timeout_ms / 1000,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=settings.database.connect_timeout_ms / 1000)
    except Exception as exc:
        await pool.close()
        raise postgres_unreachable(url, exc) from None
    return pool
