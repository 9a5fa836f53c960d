"""Read-only figures for `leadctl stats`: leads per channel, campaign, provider and status; suppressions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

import psycopg

from leadctl.store.migrations import quoted_schema


@dataclass(frozen=True, slots=True)
class DeliveryGroup:
    """How many leads share a channel, campaign, provider, status and delivery receipt status;
    ``oldest_claim_s`` for ``sending``; ``deferred``: those of them waiting for a ``not_before``."""

    channel: str
    campaign: str
    provider: str | None
    status: str
    leads: int
    oldest_claim_s: float | None
    delivery_status: str | None = None
    deferred: int = 0


def delivery_groups(conn: psycopg.Connection, namespace: str) -> list[DeliveryGroup]:
    """Every lead counted once, grouped by channel, campaign, provider, status and receipt status.

    The counts are ``delivery_counts``, kept by a trigger on ``deliveries`` (migration 4), so this
    costs the same at 100M deliveries as at 100; only the leads being sent and the deferred ones
    are read from ``deliveries``, through their partial indexes.
    """
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"""WITH counted AS (
                SELECT channel, campaign, provider, status, delivery_status, sum(leads)::bigint AS leads
                  FROM {schema}.delivery_counts GROUP BY 1, 2, 3, 4, 5 HAVING sum(leads) <> 0
            ), claims AS (
                SELECT channel, campaign, coalesce(provider, '') AS provider,
                       coalesce(delivery_status, '') AS delivery_status,
                       extract(epoch FROM now() - min(claimed_at)) AS oldest
                  FROM {schema}.deliveries WHERE status = 'sending' GROUP BY 1, 2, 3, 4
            ), deferred AS (
                SELECT channel, campaign, coalesce(provider, '') AS provider,
                       coalesce(delivery_status, '') AS delivery_status, count(*) AS leads
                  FROM {schema}.deliveries WHERE status = 'queued' AND not_before > now()
                 GROUP BY 1, 2, 3, 4
            )
            SELECT c.channel, c.campaign, nullif(c.provider, ''), c.status, c.leads,
                   CASE WHEN c.status = 'sending' THEN cl.oldest END, nullif(c.delivery_status, ''),
                   CASE WHEN c.status = 'queued' THEN coalesce(d.leads, 0) ELSE 0 END
              FROM counted c
              LEFT JOIN claims cl USING (channel, campaign, provider, delivery_status)
              LEFT JOIN deferred d USING (channel, campaign, provider, delivery_status)"""
    ).fetchall()
    return [
        DeliveryGroup(r[0], r[1], r[2], r[3], r[4], float(r[5]) if r[5] is not None else None, r[6], r[7])
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    """Leads of some campaigns, summed per channel and status; ``known``: those of the campaigns
    that have any lead."""

    by_channel: dict[str, Counter[str]] = field(default_factory=dict)
    known: frozenset[str] = frozenset()


def campaign_counts(conn: psycopg.Connection, namespace: str, campaigns: Collection[str]) -> CampaignCounts:
    """How many leads of ``campaigns`` each channel has in each status (``delivery_counts``, so as
    cheap at 100M deliveries as at 100)."""
    schema = quoted_schema(namespace)
    rows = conn.execute(
        f"""SELECT campaign, channel, status, sum(leads)::bigint FROM {schema}.delivery_counts
             WHERE campaign = ANY(%s) GROUP BY 1, 2, 3 HAVING sum(leads) <> 0""",
        (list(campaigns),),
    ).fetchall()
    by_channel: dict[str, Counter[str]] = {}
    for _, channel, status, leads in rows:
        by_channel.setdefault(channel, Counter())[status] += leads
    return CampaignCounts(by_channel, frozenset(row[0] for row in rows))


RECEIPTS: tuple[str, ...] = ("delivered", "read", "undelivered", "bounced")
"""Receipt figures of `stats`: ``delivered`` counts every lead known delivered (read ones too)."""


def receipt_figures(groups: list[DeliveryGroup]) -> dict[str, int]:
    """Leads per delivery receipt, from the providers' webhooks (leadctl.webhooks)."""
    counts = dict.fromkeys(RECEIPTS, 0)
    for group in groups:
        if group.delivery_status in ("delivered", "read"):
            counts["delivered"] += group.leads
        if group.delivery_status in ("read", "undelivered", "bounced"):
            counts[group.delivery_status] += group.leads
    return counts


def suppression_sizes(conn: psycopg.Connection, namespace: str) -> dict[str, int]:
    """Suppressed contacts per channel; ``*`` holds those suppressed on every channel."""
    schema = quoted_schema(namespace)
    rows = conn.execute(f"SELECT channel, count(*) FROM {schema}.suppressions GROUP BY 1").fetchall()
    return {channel: count for channel, count in rows}
