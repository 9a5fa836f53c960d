"""Read-only figures for `leadctl stats`: leads per channel, campaign, provider and status; suppressions."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from leadctl.store.migrations import quoted_schema


@dataclass(frozen=True, slots=True)
class DeliveryGroup:
    """How many leads share a channel, campaign, provider and status; ``oldest_claim_s`` for ``sending``."""

    channel: str
    campaign: str
    provider: str | None
    status: str
    leads: int
    oldest_claim_s: float | None


def delivery_groups(conn: psycopg.Connection, namespace: str) -> list[DeliveryGroup]:
    """Every lead counted once, grouped by channel, campaign, provider and status."""
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"""SELECT channel, campaign, provider, status, count(*),
                   extract(epoch FROM now() - min(claimed_at) FILTER (WHERE status = 'sending'))
              FROM {schema}.deliveries GROUP BY 1, 2, 3, 4"""
    ).fetchall()
    return [
        DeliveryGroup(r[0], r[1], r[2], r[3], r[4], float(r[5]) if r[5] is not None else None) for r in rows
    ]


def suppression_sizes(conn: psycopg.Connection, namespace: str) -> dict[str, int]:
    """Suppressed contacts per channel; ``*`` holds those suppressed on every channel."""
    schema = quoted_schema(namespace)
    rows = conn.execute(f"SELECT channel, count(*) FROM {schema}.suppressions GROUP BY 1").fetchall()
    return {channel: count for channel, count in rows}
