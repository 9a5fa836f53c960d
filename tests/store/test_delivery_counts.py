"""The counts `stats` reads (delivery_counts, kept by triggers) always equal a full count of every
lead's delivery (``lead_deliveries``: a lead without a deliveries row is queued): under concurrent
claims, outcomes, receipts and deletions, and after migrating a schema that already held deliveries."""

from __future__ import annotations

import random
import threading
from collections import Counter

import psycopg
import pytest

from leadctl.config import Settings
from leadctl.connections import open_postgres
from leadctl.records import Lead
from leadctl.store import migrations
from leadctl.store.leads import LeadWriter
from leadctl.store.migrations import drop_namespace, migrate
from leadctl.store.reports import delivery_groups

LEADS = 3000


def full_count(pg: psycopg.Connection, namespace: str) -> Counter[tuple[object, ...]]:
    rows = pg.execute(
        "SELECT channel, campaign, provider, status, delivery_status, count(*) "
        f'FROM "{namespace}".lead_deliveries GROUP BY 1, 2, 3, 4, 5'
    ).fetchall()
    return Counter({tuple(row[:5]): row[5] for row in rows})


def counted(pg: psycopg.Connection, namespace: str) -> Counter[tuple[object, ...]]:
    return Counter(
        {
            (g.channel, g.campaign, g.provider, g.status, g.delivery_status): g.leads
            for g in delivery_groups(pg, namespace)
        }
    )


def seed(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    leads = [
        Lead(channel, f"+55119{i:08d}", f"Lead {i}", f"c{i % 3}", i + 2, phone=f"+55119{i:08d}")
        for i, channel in ((i, ("sms", "whatsapp", "email")[i % 3]) for i in range(LEADS))
    ]
    LeadWriter(settings.namespace).record(conn, leads, "seed")
    conn.execute(  # every other lead has a queued row already (deferred, requeued or from before migration 7)
        f'INSERT INTO "{settings.namespace}".deliveries (lead_id, channel, campaign, status)'
        f" SELECT id, channel, campaign, 'queued' FROM \"{settings.namespace}\".leads WHERE id % 2 = 0"
    )
    conn.commit()
    conn.close()


def churn(url: str, namespace: str, seed_: int, errors: list[BaseException]) -> None:
    """One worker-like connection: claims, outcomes, receipts and deletions in small statements.
    A deadlock between two of them rolls one statement back (workers retry it): not an error here."""
    try:
        _churn(url, namespace, seed_)
    except psycopg.errors.DeadlockDetected:
        pass
    except BaseException as exc:
        errors.append(exc)


def _churn(url: str, namespace: str, seed_: int) -> None:
    rng = random.Random(seed_)
    schema = f'"{namespace}"'
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(60):
            ids = rng.sample(range(1, LEADS + 1), 40)
            with conn.transaction():
                conn.execute(  # the claim: the row is created, or a queued one taken
                    f"INSERT INTO {schema}.deliveries AS d (lead_id, channel, campaign, status, claimed_at) "
                    f"SELECT id, channel, campaign, 'sending', now() FROM {schema}.leads WHERE id = ANY(%s) "
                    "FOR KEY SHARE "
                    "ON CONFLICT (lead_id) DO UPDATE SET status = 'sending', claimed_at = now() "
                    "WHERE d.status = 'queued'",
                    (ids,),
                )
                conn.execute(
                    f"UPDATE {schema}.deliveries SET status = 'in_doubt' WHERE lead_id = ANY(%s) "
                    "AND status = 'sending' AND lead_id %% 7 = 0",
                    (ids,),
                )
            conn.execute(
                f"UPDATE {schema}.deliveries SET provider = 'p' || (lead_id %% 2), finished_at = now(), "
                "status = CASE WHEN lead_id %% 5 = 0 THEN 'failed' ELSE 'sent' END "
                "WHERE lead_id = ANY(%s) AND status = 'sending'",
                (ids,),
            )
            conn.execute(
                f"UPDATE {schema}.deliveries SET delivery_status = 'delivered' "
                "WHERE lead_id = ANY(%s) AND status = 'sent' AND lead_id %% 3 = 0",
                (ids[:10],),
            )
            conn.execute(f"DELETE FROM {schema}.leads WHERE id = ANY(%s) AND id %% 11 = 0", (ids[:5],))
            conn.execute(  # a lead whose row goes is queued again
                f"DELETE FROM {schema}.deliveries WHERE lead_id = ANY(%s) AND status = 'failed'", (ids[5:8],)
            )


def test_counts_stay_exact_under_concurrent_writers(settings: Settings, pg: psycopg.Connection) -> None:
    seed(settings)
    assert counted(pg, settings.namespace) == full_count(pg, settings.namespace)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=churn, args=(settings.database.url, settings.namespace, n, errors))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    orphans = pg.execute(
        f'SELECT count(*) FROM "{settings.namespace}".deliveries d'
        f' WHERE NOT EXISTS (SELECT FROM "{settings.namespace}".leads l WHERE l.id = d.lead_id)'
    ).fetchone()
    assert orphans == (0,)  # no claim created the row of a lead deleted meanwhile
    final = full_count(pg, settings.namespace)
    assert {status for (_, _, _, status, _) in final} >= {"queued", "sent", "failed", "in_doubt"}
    assert counted(pg, settings.namespace) == final


def test_migrating_a_schema_with_deliveries_counts_them(
    settings: Settings, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema of version 3 (no counts), each lead with its deliveries row as ingest wrote them
    then, migrated to the latest version."""
    namespace, schema = settings.namespace, f'"{settings.namespace}"'
    drop_namespace(pg, namespace)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
    migrate(pg, namespace)
    monkeypatch.undo()
    pg.execute(
        f"WITH new AS (INSERT INTO {schema}.leads (channel, contact, campaign)"
        " SELECT 'sms', '+55119' || lpad(i::text, 8, '0'), 'c' || i % 3 FROM generate_series(1, 300) i"
        f" RETURNING id, channel, campaign) INSERT INTO {schema}.deliveries (lead_id, channel, campaign,"
        " status, provider) SELECT id, channel, campaign, CASE WHEN id <= 100 THEN 'sent' ELSE 'queued' END,"
        " CASE WHEN id <= 100 THEN 'p' END FROM new"
    )
    assert migrate(pg, namespace) == len(migrations.MIGRATIONS) - 3
    assert counted(pg, namespace) == full_count(pg, namespace)
    assert counted(pg, namespace)[("sms", "c0", "p", "sent", None)] > 0
    assert sum(n for key, n in counted(pg, namespace).items() if key[3] == "queued") == 200
