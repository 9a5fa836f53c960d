"""The same leadctl on a real Redis Cluster (3 masters, a replica each) with partitioned queues:
end to end, a SIGKILLed worker, and a master killed mid-run (its replica takes over) — nothing lost,
nothing sent twice."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import psutil
import psycopg
import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError

from leadctl.config import Settings, load_settings
from leadctl.connections import redis_outage
from leadctl.errors import ConfigError
from leadctl.local.cluster import LocalCluster
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.queue import keys, streams
from leadctl.send import metrics
from tests.support.cli import ingest_ok, run_leadctl, start_leadctl, worker_pids
from tests.support.files import sandbox_config, write_leads
from tests.support.servers import CLUSTER_PARTITIONS as PARTITIONS
from tests.support.state import assert_sent_at_most_once, statuses
from tests.support.waiting import wait_for


def test_cluster_settings_from_nodes_or_url() -> None:
    nodes = load_settings(environ={"LEADCTL_REDIS__NODES": "[10.0.0.1:7000, 10.0.0.2:7000]"}).redis
    assert (nodes.cluster, nodes.url, nodes.partitions) == (True, "redis://10.0.0.1:7000", 1)
    url = load_settings(environ={"LEADCTL_REDIS_URL": "redis://r1:7000", "LEADCTL_REDIS__CLUSTER": "true"})
    assert url.redis.cluster and url.redis.nodes == []
    with pytest.raises(ConfigError, match=r"redis\.nodes: .*not host:port"):
        load_settings(environ={"LEADCTL_REDIS__NODES": "[r1]"})
    with pytest.raises(ConfigError, match=r"a cluster needs redis\.url or redis\.nodes"):
        load_settings(environ={"LEADCTL_REDIS__CLUSTER": "true"})


def test_every_multi_key_script_stays_in_one_slot_and_partitions_spread() -> None:
    ns = "leadctl"
    assert keys.stream(ns, "sms") == "{leadctl:sms}:stream"  # one partition: the key of old
    assert keys.streams(ns, "sms", 1) == [keys.stream(ns, "sms")]
    assert keys.streams(ns, "sms", 3)[1:] == ["{leadctl:sms:1}:stream", "{leadctl:sms:2}:stream"]
    assert len({key_slot(k.encode()) for k in keys.streams(ns, "sms", 16)}) == 16
    script_keys, _ = metrics._call(ns, "sms", Counter({"*|sent": 1}), Counter({"p|c": 1}), 1e9, True)
    rate = [
        keys.provider_pause(ns, "twilio"),
        keys.rate_limit(ns, "twilio"),
        keys.rate_limit(ns, "twilio", "+1"),
    ]
    channel = [keys.stream(ns, "sms"), keys.dead_letters(ns, "sms"), keys.partition_count(ns, "sms")]
    for group in (script_keys, rate, channel):
        assert len({key_slot(k.encode()) for k in group}) == 1, group


def test_thousand_leads_sent_exactly_once_on_a_partitioned_cluster(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    phones = write_leads(tmp_path / "leads.csv", 1000)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        lengths = [cluster_client.xlen(k) for k in keys.streams(settings.namespace, "sms", PARTITIONS)]
        assert sum(lengths) == 1000 and min(lengths) == 250  # lead ids 1..1000, id % 4
        nodes = {cluster_client.get_node_from_key(k).name for k in keys.streams(settings.namespace, "sms", 4)}
        worked = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--burst", "--json"],
            cluster_env,
        )
        assert worked.returncode == 0, worked.stderr
        assert json.loads(worked.stdout)["statuses"] == {"sent": 1000}
        messages = sandbox.messages()

    assert len(nodes) >= 2  # the partitions live on more than one master
    received = Counter(m["to"] for m in messages)
    assert set(received) == set(phones) and max(received.values()) == 1
    assert statuses(pg, settings.namespace) == Counter({"sent": 1000})
    assert streams.depth(cluster_client, settings.namespace, "sms", PARTITIONS) == streams.Depth(0, 0)
    stats = run_leadctl(["--config", str(config), "stats", "--json"], cluster_env)
    assert stats.returncode == 0, stats.stderr
    sms = json.loads(stats.stdout)["channels"]["sms"]
    assert (sms["queued"], sms["pending"], sms["sent"], sms["leads_per_min_1m"]) == (0, 0, 1000, 1000)


def test_sigkilled_worker_on_the_cluster_loses_nothing_and_sends_nothing_twice(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    write_leads(tmp_path / "leads.csv", 1500)
    with sandbox_in_thread(latency_ms=20, seed=1) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        work = ["work", "--channel", "sms", "--workers", "2", "--concurrency", "20", "--burst"]
        run = start_leadctl(["--config", str(config), *work], cluster_env)
        wait_for(lambda: sandbox.stats()["accepted"] >= 200 and len(worker_pids(run)) == 2)
        psutil.Process(worker_pids(run)[0]).kill()
        _, stderr = run.communicate(timeout=120)
        messages = sandbox.messages()

    assert "restarting" in stderr
    assert_sent_at_most_once(pg, settings.namespace, messages)
    final = statuses(pg, settings.namespace)
    assert final["sent"] + final["in_doubt"] == 1500
    assert streams.depth(cluster_client, settings.namespace, "sms", PARTITIONS) == streams.Depth(0, 0)


def test_a_master_killed_mid_run_fails_over_and_nothing_is_lost_or_sent_twice(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    redis_cluster: LocalCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    write_leads(tmp_path / "leads.csv", 3000)
    # the master of partition 0, which also holds the channel's dead letters and counters
    victim = cluster_client.get_node_from_key(keys.stream(settings.namespace, "sms")).port
    with sandbox_in_thread(latency_ms=40, seed=7) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        work = ["work", "--channel", "sms", "--workers", "2", "--concurrency", "10", "--burst"]
        run = start_leadctl(["--config", str(config), *work], cluster_env)
        try:
            wait_for(lambda: sandbox.stats()["accepted"] >= 300)
            redis_cluster.kill(victim)
            assert sandbox.stats()["accepted"] < 3000  # killed mid-run
            redis_cluster.wait_healthy()  # its replica took over
            assert victim not in redis_cluster.master_ports()
            try:
                _, stderr = run.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                run.kill()
                _, stderr = run.communicate()
                pytest.fail(f"the workers had not finished 180 s after the failover:\n{stderr[-4000:]}")
        finally:
            if run.poll() is None:
                run.kill()
            redis_cluster.restart(victim)  # back as a replica, for the tests after this one
        messages = sandbox.messages()

    assert run.returncode == 0, stderr
    # the workers rode the failover out: redis-py's cluster client may absorb it (8.2 retries through
    # it), else the workers pause and say so, and then resume
    assert ("Redis unavailable" in stderr) == ("resuming" in stderr)
    assert "Traceback" not in stderr
    assert_sent_at_most_once(pg, settings.namespace, messages)
    final = statuses(pg, settings.namespace)
    assert final["sent"] + final["in_doubt"] == 3000 and final["sent"] >= 2900
    redis_cluster.wait_healthy()
    assert streams.depth(cluster_client, settings.namespace, "sms", PARTITIONS) == streams.Depth(0, 0)


def test_requeue_rebuilds_only_the_partition_that_lost_its_entries(
    settings: Settings,
    cluster_env: dict[str, str],
    cluster_client: RedisCluster,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    write_leads(tmp_path / "leads.csv", 400)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", cluster_env)
        lost = keys.stream(settings.namespace, "sms", 2)
        assert cluster_client.xlen(lost) == 100
        cluster_client.delete(lost)  # as if that master lost its data
        requeued = run_leadctl(
            ["--config", str(config), "requeue", "--channel", "sms", "--json"], cluster_env
        )
        assert requeued.returncode == 0, requeued.stderr
        assert json.loads(requeued.stdout)["appended"] == 100  # the other partitions' entries were found
        assert cluster_client.xlen(lost) == 100
        worked = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst", "--json"],
            cluster_env,
        )
        assert worked.returncode == 0, worked.stderr
        assert sandbox.stats()["accepted"] == 400 and sandbox.stats()["duplicates"] == 0
    assert statuses(pg, settings.namespace) == Counter({"sent": 400})


def test_a_write_to_a_socket_the_server_closed_is_an_outage_under_uvloop() -> None:
    closed = RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")
    assert redis_outage(closed) and redis_outage(ConnectionResetError("Connection lost"))
    assert redis_outage(ClusterDownError("CLUSTERDOWN The cluster is down"))
    assert not redis_outage(RuntimeError("Session is closed")) and not redis_outage(ValueError("x"))
