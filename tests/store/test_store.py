"""PostgreSQL as the system of record: migrations, bulk de-duplicating writes, the send claim."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from leadctl.config import Settings
from leadctl.connections import open_async_pool, open_postgres
from leadctl.records import Lead
from leadctl.store import migrations
from leadctl.store.deliveries import (
    STATUSES,
    ClaimResult,
    DeliveryStore,
    Outcome,
    id_array,
    status_counts,
)
from leadctl.store.leads import LeadWriter
from leadctl.store.migrations import MIGRATIONS, drop_namespace, migrate
from leadctl.store.reports import delivery_groups
from tests.support.waiting import wait_until


def lead(contact: str, channel: str = "sms", line: int = 2, **fields: str) -> Lead:
    return Lead(
        channel=channel, contact=contact, name="Ana", campaign="c1", line=line, phone=contact, fields=fields
    )


def test_migrations_apply_once(settings: Settings, pg: psycopg.Connection) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    assert migrate(conn, settings.namespace) == 0
    versions = conn.execute(f'SELECT version FROM "{settings.namespace}".schema_migrations').fetchall()
    assert [v for (v,) in versions] == [v for v, _ in MIGRATIONS]
    conn.close()


def test_a_schema_of_version_5_upgrades_with_its_queued_leads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations 6 (contacts collate "C") and 7 (deliveries rows created at claim time) on a schema
    whose leads each have a ``queued`` deliveries row, as ingest wrote them before."""
    conn = open_postgres(settings.database.url or "", settings)
    namespace, schema = settings.namespace, f'"{settings.namespace}"'
    drop_namespace(conn, namespace)
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:5])
    migrate(conn, namespace)
    old = ["+5511987650001", "+5511987650002"]
    for contact in old:
        conn.execute(
            f"WITH new AS (INSERT INTO {schema}.leads (channel, contact, campaign) VALUES ('sms', %s, 'c1')"
            f" RETURNING id) INSERT INTO {schema}.deliveries (lead_id, channel, campaign, status)"
            " SELECT id, 'sms', 'c1', 'queued' FROM new",
            (contact,),
        )
    conn.execute(f"INSERT INTO {schema}.suppressions (contact, channel) VALUES ('+5511987650003', 'sms')")
    conn.commit()
    monkeypatch.undo()

    assert migrate(conn, namespace) == 2
    collations = conn.execute(
        "SELECT collname FROM pg_attribute JOIN pg_collation c ON c.oid = attcollation"
        " WHERE attrelid IN (%s::regclass, %s::regclass) AND attname IN ('channel', 'contact')",
        (f"{schema}.leads", f"{schema}.suppressions"),
    ).fetchall()
    assert collations == [("C",)] * 4
    writer = LeadWriter(namespace)
    again = [*old, "+5511987650003", "+5511987650004"]
    recorded = writer.record(conn, [lead(c, line=i + 2) for i, c in enumerate(again)], "f")
    assert [r.suppressed for r in recorded] == [True, False]  # the first two are duplicates
    store = DeliveryStore(namespace)

    async def claim_all() -> list[int]:
        pool = await open_async_pool(settings.database.url or "", settings, max_size=1)
        async with pool.connection() as c:
            ids = [row[0] for row in await (await c.execute(f"SELECT id FROM {schema}.leads")).fetchall()]
            result = await store.claim(c, "sms", ids, "w1")
        await pool.close()
        return sorted(x.lead_id for x in result.claimed)

    claimed = asyncio.run(claim_all())
    assert len(claimed) == 3  # the two old queued leads and the new one; not the suppressed one
    assert status_counts(conn, namespace)["sms"] == {
        **dict.fromkeys(STATUSES, 0),
        "sending": 3,
        "suppressed": 1,
    }
    assert _counted(conn, namespace) == {("sms", "sending"): 3, ("sms", "suppressed"): 1}
    conn.close()


def _counted(conn: psycopg.Connection, namespace: str) -> dict[tuple[str, str], int]:
    """What `stats` counts (delivery_counts), per channel and status."""
    return {(g.channel, g.status): g.leads for g in delivery_groups(conn, namespace) if g.leads}


def test_deleting_leads_deletes_their_deliveries_without_a_foreign_key(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    schema = f'"{settings.namespace}"'
    recorded = LeadWriter(settings.namespace).record(
        conn, [lead(f"+551198765000{i}", line=i + 2) for i in range(4)], "f"
    )
    assert not conn.execute(  # no row-level RI check on every ingested delivery
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
        (f"{schema}.deliveries",),
    ).fetchall()
    ids = [r.lead_id for r in recorded]
    conn.execute(  # the first two were sent; the others are queued, with no deliveries row yet
        f"INSERT INTO {schema}.deliveries (lead_id, channel, campaign, status)"
        " SELECT id, channel, campaign, 'sent' FROM {schema}.leads WHERE id = ANY(%s)".replace(
            "{schema}", schema
        ),
        (ids[:2],),
    )
    conn.execute(f"DELETE FROM {schema}.leads WHERE id = ANY(%s)", ([ids[0], ids[2]],))
    left = conn.execute(f"SELECT lead_id FROM {schema}.deliveries").fetchall()
    assert left == [(ids[1],)]
    counts = status_counts(conn, settings.namespace)["sms"]
    assert (counts["sent"], counts["queued"]) == (1, 1)
    assert _counted(conn, settings.namespace) == {("sms", "sent"): 1, ("sms", "queued"): 1}
    conn.close()


def test_writer_deduplicates_within_and_across_batches(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    writer = LeadWriter(settings.namespace)
    first = writer.record(
        conn, [lead("+5511987650001"), lead("+5511987650001", line=3), lead("+5511987650002")], "f"
    )
    assert len(first) == 2
    again = writer.record(conn, [lead("+5511987650002"), lead("+5511987650002", channel="whatsapp")], "f")
    assert [(r.channel, r.suppressed) for r in again] == [("whatsapp", False)]
    assert status_counts(conn, settings.namespace) == {
        "sms": {"queued": 2, "sending": 0, "sent": 0, "failed": 0, "dead": 0, "in_doubt": 0, "suppressed": 0},
        "whatsapp": {
            "queued": 1,
            "sending": 0,
            "sent": 0,
            "failed": 0,
            "dead": 0,
            "in_doubt": 0,
            "suppressed": 0,
        },
    }
    conn.close()


def test_suppressed_contacts_are_recorded_but_marked(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    conn.execute(
        f'INSERT INTO "{settings.namespace}".suppressions (contact, channel) VALUES (%s, %s), (%s, %s)',
        ("+5511987650001", "*", "+5511987650002", "whatsapp"),
    )
    recorded = LeadWriter(settings.namespace).record(
        conn,
        [lead("+5511987650001"), lead("+5511987650002"), lead("+5511987650002", channel="whatsapp")],
        "f",
    )
    assert sorted((r.channel, r.suppressed) for r in recorded) == [
        ("sms", False),
        ("sms", True),
        ("whatsapp", True),
    ]
    conn.close()


def test_claim_is_exclusive_and_unfinished_claims_become_in_doubt(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    recorded = LeadWriter(settings.namespace).record(
        conn, [lead(f"+55119876500{i:02d}", name_field="x") for i in range(3)], "f"
    )
    ids = [r.lead_id for r in recorded]
    store = DeliveryStore(settings.namespace)

    async def scenario() -> None:
        pool = await open_async_pool(settings.database.url or "", settings, max_size=2)
        async with pool.connection() as c:
            first = await store.claim(c, "sms", ids, "w1")
            assert sorted(x.lead_id for x in first.claimed) == sorted(ids)
            assert first.claimed[0].fields == {"name_field": "x"}
            await store.record(
                c,
                [
                    Outcome(ids[0], "sent", "twilio", "SM1"),
                    Outcome(ids[1], "failed", "twilio", None, "21211", "invalid"),
                ],
            )
            # a redelivery: sent and failed leads are not claimed again; the unfinished one is in doubt
            second = await store.claim(c, "sms", [*ids, 999_999], "w2")
            assert second.claimed == []
            assert second.in_doubt == [ids[2]]
            assert second.unknown == [999_999]
        await pool.close()

    asyncio.run(scenario())
    counts = status_counts(conn, settings.namespace)["sms"]
    assert (counts["sent"], counts["failed"], counts["in_doubt"], counts["queued"]) == (1, 1, 1, 0)
    row = conn.execute(
        f'SELECT provider_message_id, attempts FROM "{settings.namespace}".deliveries WHERE lead_id = %s',
        (ids[0],),
    ).fetchone()
    assert row == ("SM1", 1)
    conn.close()


def test_a_claim_racing_the_deletion_of_its_lead_neither_claims_it_nor_leaves_a_row(
    settings: Settings,
) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    schema = f'"{settings.namespace}"'
    (recorded,) = LeadWriter(settings.namespace).record(conn, [lead("+5511987650001")], "f")
    store = DeliveryStore(settings.namespace)

    def waits_for_a_lock(pid: int) -> bool:
        with psycopg.connect(settings.database.url or "", autocommit=True) as watcher:
            row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
            return row.fetchone() == ("Lock",)

    async def scenario(deleting: psycopg.Connection) -> tuple[bool, ClaimResult]:
        pool = await open_async_pool(settings.database.url or "", settings, max_size=1)
        async with pool.connection() as c:
            claim = asyncio.ensure_future(store.claim(c, "sms", [recorded.lead_id], "w1"))
            pid = c.info.backend_pid
            await wait_until(lambda: waits_for_a_lock(pid), what="the claim to wait for the deletion's lock")
            waited = not claim.done()
            deleting.commit()
            result = await claim
        await pool.close()
        return waited, result

    with psycopg.connect(settings.database.url or "") as deleting:
        deleting.execute(
            f"DELETE FROM {schema}.leads WHERE id = %s", (recorded.lead_id,)
        )  # not committed yet
        waited, result = asyncio.run(scenario(deleting))
    assert waited  # the claim waited for the deletion to end
    assert (result.claimed, result.unknown) == ([], [recorded.lead_id])
    assert conn.execute(f"SELECT count(*) FROM {schema}.deliveries").fetchone() == (0,)
    assert _counted(conn, settings.namespace) == {}
    conn.close()


def test_a_claim_reads_its_leads_by_primary_key_only(settings: Settings) -> None:
    """With the statistics of a freshly filled table, the planner once also read every lead of the
    channel in the (channel, contact) index: a claim of 10 leads cost as much as reading them all."""
    conn = open_postgres(settings.database.url or "", settings)
    recorded = LeadWriter(settings.namespace).record(
        conn, [lead(f"+55119{i:08d}", line=i + 2) for i in range(5000)], "f"
    )
    conn.commit()
    ids = id_array([r.lead_id for r in recorded[100:110]])
    conn.execute("SET plan_cache_mode = force_generic_plan")
    claim = DeliveryStore(settings.namespace)._claim
    plan = "\n".join(
        row[0] for row in conn.execute(f"EXPLAIN {claim}", {"ids": ids, "channel": "sms", "worker": "w"})
    )
    assert "leads_channel_contact_key" not in plan and "Seq Scan on leads" not in plan, plan
    conn.rollback()
    conn.close()


def test_claim_ignores_other_channels(settings: Settings) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    (recorded,) = LeadWriter(settings.namespace).record(
        conn, [lead("+5511987650001", channel="whatsapp")], "f"
    )

    async def scenario() -> None:
        pool = await open_async_pool(settings.database.url or "", settings, max_size=1)
        async with pool.connection() as c:
            result = await DeliveryStore(settings.namespace).claim(c, "sms", [recorded.lead_id], "w")
        await pool.close()
        assert result.claimed == [] and result.in_doubt == []

    asyncio.run(scenario())
    conn.close()


@pytest.mark.parametrize("namespace_value", ["UPPER", "1abc", "a-b"])
def test_namespace_must_be_an_identifier(namespace_value: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Settings(namespace=namespace_value)
