"""The figures `leadctl stats` shows: queue depths from Redis, delivery outcomes from PostgreSQL."""

from __future__ import annotations

import psycopg
import redis

from leadctl import queue
from leadctl.config import CHANNELS
from leadctl.store.deliveries import status_counts

OUTCOMES: tuple[str, ...] = ("sent", "failed", "dead", "in_doubt", "suppressed")


def channel_stats(
    redis_client: redis.Redis, conn: psycopg.Connection, namespace: str
) -> dict[str, dict[str, int]]:
    """Per channel: queued and pending entries in the stream; leads sending and per final status."""
    counts = status_counts(conn, namespace)
    figures: dict[str, dict[str, int]] = {}
    for channel in CHANNELS:
        depth = queue.depth(redis_client, namespace, channel)
        statuses = counts.get(channel, {})
        figures[channel] = {
            "queued": depth.queued,
            "pending": depth.pending,
            "sending": statuses.get("sending", 0),
            **{status: statuses.get(status, 0) for status in OUTCOMES},
        }
    return figures
