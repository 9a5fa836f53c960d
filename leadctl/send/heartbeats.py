"""Worker heartbeats in Redis, so `leadctl workers` and `stats` on any host list the live fleet."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import orjson
import redis
import redis.asyncio as aioredis

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_redis
from leadctl.queue import keys

STALE_AFTER_S = 15.0
"""A worker not heard from for this long is no longer listed (and its heartbeat is removed)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    consumer: str
    host: str
    pid: int
    channel: str
    sends_per_s: float
    sent: int
    last_seen: float


async def publish(client: aioredis.Redis, namespace: str, beat: Heartbeat) -> None:
    """Record (or refresh) one worker's heartbeat."""
    await client.hset(keys.workers(namespace), beat.consumer, orjson.dumps(asdict(beat)))


async def retire(client: aioredis.Redis, namespace: str, consumer: str) -> None:
    """Remove a worker's heartbeat when it exits cleanly."""
    await client.hdel(keys.workers(namespace), consumer)


def live_workers(client: redis.Redis, namespace: str, now: float | None = None) -> list[Heartbeat]:
    """Workers heard from within STALE_AFTER_S, sorted by host and consumer; stale entries are pruned."""
    now = time.time() if now is None else now
    key = keys.workers(namespace)
    live: list[Heartbeat] = []
    stale: list[bytes] = []
    for consumer, raw in client.hgetall(key).items():
        try:
            beat = Heartbeat(**orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError):
            stale.append(consumer)
            continue
        if now - beat.last_seen <= STALE_AFTER_S:
            live.append(beat)
        else:
            stale.append(consumer)
    if stale:
        client.hdel(key, *stale)
    return sorted(live, key=lambda b: (b.host, b.consumer))


def fleet_workers(settings: Settings, endpoints: Endpoints) -> list[Heartbeat]:
    """`leadctl workers`: the live worker processes of every host of the namespace."""
    client = open_redis(endpoints.redis_url, settings)
    try:
        return live_workers(client, settings.namespace)
    finally:
        client.close()
