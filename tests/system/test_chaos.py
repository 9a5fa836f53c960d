"""Chaos: 10,000 leads against a sandbox failing in every way at once (5% 5xx, 2% 429, 1% invalid
numbers, 0.5% hangs), over real HTTP, Redis and PostgreSQL, with four worker processes. Every lead
ends in a final status, the counts reconcile with PostgreSQL, nobody gets a message twice, nothing in
doubt or refused is tried again. The same scenario runs on the single Redis and on the real 3-master
Redis Cluster with partitioned streams."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psycopg

from leadctl.config import Settings
from leadctl.connections import open_postgres
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.queue import keys, streams
from leadctl.records import Lead
from leadctl.store.leads import LeadWriter
from tests.support.cli import run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.providers import HANG_S
from tests.support.servers import RedisTarget

LEADS = 10_000  # on the cluster too: its run takes about as long as on the single Redis (~25 s)
INVALID = (
    100  # 1%: numbers the provider refuses (21211), recorded through the store (ingest would reject them)
)
OPTED_OUT = "+15005550004"  # the sandbox's unsubscribed recipient (21610)
MAX_ATTEMPTS = 2


def _record_invalid(settings: Settings, target: RedisTarget) -> list[str]:
    contacts = [f"+0{i:010d}" for i in range(INVALID)]  # not E.164: the provider refuses them
    leads = [Lead("sms", contact, f"Invalid {i}", "chaos", i + 1) for i, contact in enumerate(contacts)]
    assert settings.database.url is not None
    with open_postgres(settings.database.url, settings) as conn:
        recorded = LeadWriter(settings.namespace).record(conn, leads, "chaos")
    streams.enqueue(
        target.client, settings.namespace, [("sms", r.lead_id) for r in recorded], target.partitions
    )
    return contacts


def test_ten_thousand_leads_through_every_failure(
    settings: Settings,
    redis_target: RedisTarget,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    ns, client, partitions = settings.namespace, redis_target.client, redis_target.partitions
    write_leads(tmp_path / "leads.csv", LEADS - INVALID - 1, extra_phones=(OPTED_OUT,))
    env = {
        **redis_target.env,
        "LEADCTL_CHANNELS__SMS__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "LEADCTL_CHANNELS__SMS__RETRY_INITIAL_MS": "5",
        "LEADCTL_CHANNELS__SMS__RETRY_MAX_MS": "50",
        "LEADCTL_PROVIDERS__TWILIO__READ_TIMEOUT_MS": "3000",
        "LEADCTL_PROVIDERS__TWILIO__BREAKER_RESET_S": "0.5",
    }
    faults = {"error_rate": 0.05, "throttle_rate": 0.02, "timeout_rate": 0.005, "hang_s": HANG_S, "seed": 7}
    with sandbox_in_thread(**faults) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingested = run_leadctl(
            ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--json"], env
        )
        assert ingested.returncode == 0, ingested.stderr
        invalid = _record_invalid(settings, redis_target)
        accepted = json.loads(ingested.stdout)["accepted"] + len(invalid)
        assert accepted == LEADS
        assert streams.depth(client, ns, "sms", partitions) == streams.Depth(LEADS, 0)

        work = ["work", "--channel", "sms", "--workers", "4", "--concurrency", "200", "--burst", "--json"]
        worked = run_leadctl(["--config", str(config), *work], env, timeout=120)
        assert worked.returncode == 1, worked.stderr  # some leads failed
        reported = json.loads(worked.stdout)["statuses"]
        stats, records = sandbox.stats(), sandbox.messages()

    rows = pg.execute(
        "SELECT l.contact, d.status, d.attempts, d.error_code, d.provider_message_id "
        f'FROM "{ns}".lead_deliveries d JOIN "{ns}".leads l ON l.id = d.lead_id'
    ).fetchall()
    by_status: dict[str, list[tuple]] = {}
    for row in rows:
        by_status.setdefault(row[1], []).append(row)
    counts = {status: len(found) for status, found in by_status.items()}

    # every lead ended sent, failed, dead or in doubt, and PostgreSQL, the report and Redis agree
    assert set(counts) <= {"sent", "failed", "dead", "in_doubt"}, counts
    assert sum(counts.values()) == accepted == LEADS
    assert counts == reported
    assert streams.depth(client, ns, "sms", partitions) == streams.Depth(0, 0)
    assert client.xlen(keys.dead_letters(ns, "sms")) == counts["dead"]

    # nobody got a message twice; what the sandbox took is exactly what is sent or in doubt
    received = Counter(record["to"] for record in records)
    assert stats["duplicates"] == 0 and max(received.values()) == 1
    assert set(received) == {row[0] for row in by_status["sent"] + by_status.get("in_doubt", [])}
    assert {record["sid"] for record in records} >= {row[4] for row in by_status["sent"]}

    # each lead in doubt had one request, taken and left unanswered (a hang, or an answer later than
    # the read timeout), and none after it
    assert 0 < stats["hung"] <= counts["in_doubt"]
    assert all(received[row[0]] == 1 for row in by_status["in_doubt"])
    # refused leads were tried once: one refusal each, never retried (a refusable lead whose every
    # attempt met a 5xx or a 429 first is dead); the opted-out one is suppressed
    refusable = {*invalid, OPTED_OUT}
    assert counts["failed"] == stats["rejected"] > INVALID / 2
    assert {row[0] for row in by_status["failed"]} <= refusable
    assert refusable <= {row[0] for row in by_status["failed"] + by_status["dead"]}
    assert {row[3] for row in by_status["failed"]} <= {"21211", "21610"}
    opted_out = [row for row in by_status["failed"] if row[3] == "21610"]
    suppressed = pg.execute(f'SELECT contact, channel FROM "{ns}".suppressions').fetchall()
    assert suppressed == ([(OPTED_OUT, "sms")] if opted_out else [])
    # dead leads used every attempt, each a 5xx or a 429
    assert counts["dead"] > 0
    assert {row[2] for row in by_status["dead"]} == {MAX_ATTEMPTS}
    assert {row[3] for row in by_status["dead"]} <= {"20500", "20429", "circuit_open"}
    assert stats["errors"] > 0 and stats["rate_limited"] > 0
