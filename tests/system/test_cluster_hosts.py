"""Two hosts on one Redis Cluster: two supervisors with their own `--name` share the partitioned
queues, the provider's rate limit, the batch lock and the fleet's heartbeats, and no lead is sent twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psycopg
from redis.cluster import RedisCluster

from leadctl.bench.ratelimit import worst_window
from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.providers.ratelimit import default_burst
from leadctl.send import heartbeats
from tests.support.cli import ingest_ok, start_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.state import statuses
from tests.support.waiting import wait_for

RATE = 150


def test_two_supervisors_share_queues_rate_limit_and_heartbeats_without_double_sends(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    write_leads(tmp_path / "leads.csv", 1200)
    with sandbox_in_thread(latency_ms=10, seed=11) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url, f"    rate_limit: {RATE}\n")
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        work = ["work", "--channel", "sms", "--workers", "2", "--concurrency", "20", "--burst", "--json"]
        hosts = {
            name: start_leadctl(["--config", str(config), *work, "--name", name], cluster_env)
            for name in ("h1", "h2")
        }

        def live_hosts() -> set[str]:
            beats = heartbeats.live_workers(cluster_client, settings.namespace)
            return {beat.consumer.split(":", 1)[0] for beat in beats}

        wait_for(lambda: live_hosts() == {"h1", "h2"}, timeout=60, every=0.2)
        reports = {}
        for name, run in hosts.items():
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            reports[name] = json.loads(out)["statuses"].get("sent", 0)
        accepted = sorted(m["time"] for m in sandbox.messages())
        assert sandbox.stats()["duplicates"] == 0

    assert statuses(pg, settings.namespace) == Counter({"sent": 1200})
    assert sum(reports.values()) == 1200
    by_host = dict(
        pg.execute(
            f"SELECT split_part(worker, ':', 1), count(*) FROM \"{settings.namespace}\".deliveries GROUP BY 1"
        ).fetchall()
    )
    assert by_host == reports and min(by_host.values()) >= 200, by_host  # both hosts did a fair share
    # one limit for both hosts: the provider saw at most RATE/s (5%), no warm one-second window over 110%
    assert len(accepted) == 1200
    assert (len(accepted) - default_burst(RATE)) / (accepted[-1] - accepted[0]) <= RATE * 1.05
    assert worst_window([t for t in accepted if t >= accepted[0] + 0.5]) <= RATE * 1.10


def test_a_batch_started_on_each_of_two_hosts_runs_once(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    write_leads(tmp_path / "leads.csv", 600)
    # 5 sends in flight at 100 ms each: the first run takes ~12 s, long enough to overlap for sure
    with sandbox_in_thread(latency_ms=100, seed=12) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        env = {**cluster_env, "LEADCTL_CHANNELS__SMS__CONCURRENCY": "5"}
        batch = ["--config", str(config), "batch", "--workers", "1", "--json"]
        first = start_leadctl([*batch, "--name", "h1"], env)
        wait_for(lambda: sandbox.stats()["accepted"] >= 20)
        second = start_leadctl([*batch, "--name", "h2"], env)
        summaries = []
        for run in (first, second):
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            summaries.append(json.loads(out))
        assert (sandbox.stats()["accepted"], sandbox.stats()["duplicates"]) == (600, 0)

    assert [s["skipped"] for s in summaries] == [False, True]
    sms = summaries[0]["channels"]["sms"]
    assert (sms["sent"], sms["remaining"]) == (600, 0)
    assert statuses(pg, settings.namespace) == Counter({"sent": 600})
