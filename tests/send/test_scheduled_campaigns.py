"""`leadctl batch --campaign`: real processes, Redis, PostgreSQL and the sandbox over HTTP.

The leads of the campaigns not selected must stay exactly as they were: queued in PostgreSQL and in
their stream once each, never claimed, lost or doubled; a following plain batch sends them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.queue import keys
from tests.support.cli import ingest_ok, run_leadctl
from tests.support.files import sandbox_config
from tests.support.servers import CLUSTER_PARTITIONS

STATUSES = ("sent", "failed", "dead", "suppressed", "in_doubt", "queued")


def write_campaign_leads(path: Path, count: int) -> dict[str, set[str]]:
    """A CSV of ``count`` mobiles whose campaigns interleave (every third lead is ``outono``, the
    others ``verao``); returns each campaign's E.164 phones."""
    phones: dict[str, set[str]] = {"verao": set(), "outono": set()}
    lines = ["nome,telefone,canal,campanha"]
    for i in range(count):
        local = f"9{7000_0000 + i:08d}"
        campaign = "outono" if i % 3 == 0 else "verao"
        phones[campaign].add(f"+5511{local}")
        lines.append(f"Lead {i},+55 11 {local},SMS,{campaign}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return phones


def batch(config: Path, env: dict[str, str], *options: str) -> dict[str, Any]:
    """Run `leadctl batch --json` for real; the test fails unless it exits 0. Returns its summary."""
    result = run_leadctl(["--config", str(config), "batch", "--workers", "2", "--json", *options], env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout) | {"stderr": result.stderr}


def by_campaign(pg: psycopg.Connection, namespace: str) -> dict[str, Counter[str]]:
    rows = pg.execute(
        f'SELECT campaign, status, count(*) FROM "{namespace}".lead_deliveries GROUP BY 1, 2'
    ).fetchall()
    counts: dict[str, Counter[str]] = {}
    for campaign, status, n in rows:
        counts.setdefault(campaign, Counter())[status] = n
    return counts


def queued_in_streams(client: redis.Redis | RedisCluster, namespace: str, partitions: int) -> Counter[int]:
    """Lead id -> how many entries it has in the sms streams; no entry may be pending."""
    ids: Counter[int] = Counter()
    for key in keys.streams(namespace, "sms", partitions):
        assert client.xpending(key, keys.GROUP)["pending"] == 0
        ids.update(int(fields[b"l"]) for _, fields in client.xrange(key))
    return ids


def lead_ids(pg: psycopg.Connection, namespace: str, campaign: str) -> set[int]:
    rows = pg.execute(f'SELECT id FROM "{namespace}".leads WHERE campaign = %s', (campaign,)).fetchall()
    return {row[0] for row in rows}


def check_one_campaign_then_the_rest(
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis | RedisCluster,
    partitions: int,
) -> None:
    """900 leads of two interleaved campaigns; `batch --campaign verao` sends its 600 and leaves the
    300 others queued in PostgreSQL and their streams; a plain batch then sends those."""
    phones = write_campaign_leads(tmp_path / "leads.csv", 900)
    env = {**env, "LEADCTL_REDIS__PARTITIONS": str(partitions), "LEADCTL_WORKER__BATCH_SIZE": "50"}
    with sandbox_in_thread(latency_ms=2, seed=7) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        accepted = ingest_ok(config, tmp_path / "leads.csv", env)["accepted"]
        assert accepted == 900

        first = batch(config, env, "--campaign", "verao")
        sms = first["channels"]["sms"]
        assert first["campaigns"] == ["verao"] and first["unknown_campaigns"] == []
        assert (sms["sent"], sms["failed"], sms["in_doubt"], sms["dead"]) == (600, 0, 0, 0)
        assert sms["remaining"] == 0  # of the selected campaign
        assert "campaigns: verao" in first["stderr"]
        sent_first = Counter(m["to"] for m in sandbox.messages())
        assert set(sent_first) == phones["verao"] and max(sent_first.values()) == 1

        counts = by_campaign(pg, namespace)
        assert counts == {"verao": Counter({"sent": 600}), "outono": Counter({"queued": 300})}
        total = sum(counts["verao"][s] + counts["outono"][s] for s in STATUSES)
        assert accepted == total  # sent + failed + dead + suppressed + in_doubt + still queued
        # the other campaign's leads are in their streams once each, unread, and nothing else is
        assert queued_in_streams(redis_client, namespace, partitions) == Counter(
            dict.fromkeys(lead_ids(pg, namespace, "outono"), 1)
        )

        second = batch(config, env)
        assert second["campaigns"] is None
        assert second["channels"]["sms"]["sent"] == 300 and second["channels"]["sms"]["remaining"] == 0
        received = Counter(m["to"] for m in sandbox.messages())
        assert sandbox.stats()["duplicates"] == 0

    assert set(received) == phones["verao"] | phones["outono"] and max(received.values()) == 1
    assert by_campaign(pg, namespace) == {"verao": Counter({"sent": 600}), "outono": Counter({"sent": 300})}
    assert queued_in_streams(redis_client, namespace, partitions) == Counter()


@pytest.mark.parametrize("partitions", [1, 3])
def test_batch_sends_only_the_selected_campaign_and_leaves_the_other_queued(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
    partitions: int,
) -> None:
    check_one_campaign_then_the_rest(settings.namespace, leadctl_env, tmp_path, pg, redis_client, partitions)


def test_batch_with_a_campaign_on_a_partitioned_cluster(
    settings: Settings,
    cluster_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    cluster_client: RedisCluster,
) -> None:
    """Each pass-over names one partition's key: legal on Redis Cluster, partitions on several masters."""
    check_one_campaign_then_the_rest(
        settings.namespace, cluster_env, tmp_path, pg, cluster_client, CLUSTER_PARTITIONS
    )


def test_remaining_counts_the_selected_campaigns_queued_leads(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_campaign_leads(tmp_path / "leads.csv", 300)
    with sandbox_in_thread(latency_ms=2, seed=8) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        summary = batch(config, leadctl_env, "--campaign", "verao", "--campaign", "outono", "--limit", "50")
        assert sandbox.stats()["accepted"] == 50
    assert summary["campaigns"] == ["outono", "verao"]
    assert summary["channels"]["sms"]["sent"] == 50 and summary["channels"]["sms"]["remaining"] == 250
    counts = by_campaign(pg, settings.namespace)
    assert counts["verao"]["queued"] + counts["outono"]["queued"] == 250


def test_an_unknown_campaign_sends_nothing_and_touches_nothing(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    write_campaign_leads(tmp_path / "leads.csv", 60)
    stream = keys.stream(settings.namespace, "sms")
    with sandbox_in_thread(seed=9) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        before = redis_client.xrange(stream)
        summary = batch(config, leadctl_env, "--campaign", "inverno")
        human = run_leadctl(["--config", str(config), "batch", "--campaign", "inverno"], leadctl_env)
        assert sandbox.stats()["accepted"] == 0
    assert summary["campaigns"] == ["inverno"] and summary["unknown_campaigns"] == ["inverno"]
    assert summary["channels"]["sms"] | {"leads_per_min": 0} == {
        "sent": 0,
        "failed": 0,
        "in_doubt": 0,
        "dead": 0,
        "deferred": 0,
        "remaining": 0,
        "leads_per_min": 0,
    }
    assert "no leads of campaign 'inverno'" in summary["stderr"]
    assert human.returncode == 0, human.stderr
    assert "no leads of campaign 'inverno'" in human.stderr and "sms: 0 sent" in human.stderr
    assert redis_client.xrange(stream) == before  # the very same entries, unread
    assert redis_client.xpending(stream, keys.GROUP)["pending"] == 0
    assert by_campaign(pg, settings.namespace) == {
        "verao": Counter({"queued": 40}),
        "outono": Counter({"queued": 20}),
    }


def test_work_with_a_campaign_needs_burst_and_sends_only_it(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    phones = write_campaign_leads(tmp_path / "leads.csv", 120)
    with sandbox_in_thread(seed=10) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        work = ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--campaign", "outono"]
        refused = run_leadctl(work, leadctl_env)
        assert refused.returncode == 2 and "--campaign needs --burst" in refused.stderr
        done = run_leadctl([*work, "--burst", "--json"], leadctl_env)
        assert done.returncode == 0, done.stderr
        received = Counter(m["to"] for m in sandbox.messages())
    assert json.loads(done.stdout)["statuses"] == {"sent": 40}
    assert set(received) == phones["outono"] and max(received.values()) == 1
    assert by_campaign(pg, settings.namespace) == {
        "verao": Counter({"queued": 80}),
        "outono": Counter({"sent": 40}),
    }
