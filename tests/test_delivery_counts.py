"""The counts `stats` reads (delivery_counts, kept by a trigger) always equal a full count of the
deliveries: under concurrent claims, outcomes, receipts and deletions, and after migrating a schema
that already held deliveries."""

from __future__ import annotations

import random
import threading
from collections import Counter

import psycopg

from leadctl.config import Settings
from leadctl.connections import open_postgres
from leadctl.leads import Lead
from leadctl.store.leads import LeadWriter
from leadctl.store.migrations import migrate
from leadctl.store.reports import delivery_groups

LEADS = 3000


def full_count(pg: psycopg.Connection, namespace: str) -> Counter[tuple[object, ...]]:
    rows = pg.execute(
        "SELECT channel, campaign, provider, status, delivery_status, count(*) "
        f'FROM "{namespace}".deliveries GROUP BY 1, 2, 3, 4, 5'
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
                conn.execute(
                    f"UPDATE {schema}.deliveries SET status = 'sending', claimed_at = now() "
                    "WHERE lead_id = ANY(%s) AND status = 'queued'",
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
    final = full_count(pg, settings.namespace)
    assert {status for (_, _, _, status, _) in final} >= {"queued", "sent", "failed", "in_doubt"}
    assert counted(pg, settings.namespace) == final


def test_migrating_a_schema_with_deliveries_counts_them(settings: Settings, pg: psycopg.Connection) -> None:
    seed(settings)
    schema = f'"{settings.namespace}"'
    pg.execute(f"UPDATE {schema}.deliveries SET status = 'sent', provider = 'p' WHERE lead_id <= 100")
    # the schema as it was before migration 4
    pg.execute(f"DROP TABLE {schema}.delivery_counts")
    pg.execute(f"DROP FUNCTION {schema}.count_deliveries() CASCADE")
    for index in ("deliveries_sending", "deliveries_deferred", "deliveries_finished_at"):
        pg.execute(f"DROP INDEX {schema}.{index}")
    pg.execute(f"DELETE FROM {schema}.schema_migrations WHERE version = 4")
    assert migrate(pg, settings.namespace) == 1
    assert counted(pg, settings.namespace) == full_count(pg, settings.namespace)
    assert counted(pg, settings.namespace)[("sms", "c0", "p", "sent", None)] > 0
