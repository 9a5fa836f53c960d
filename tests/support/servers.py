"""The servers the suite runs against: where they are, whether they answer, and the Redis targets."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psycopg
import redis

from leadctl.connections import RedisClient

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

CLUSTER_PARTITIONS = 4
"""Streams per channel in the Redis Cluster tests."""


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a scenario runs: the real command's environment, a client of that Redis, and the
    stream partitions per channel the command uses there."""

    env: dict[str, str]
    client: RedisClient
    partitions: int
