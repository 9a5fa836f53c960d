"""A channel's partition count is recorded in Redis with its streams, and every ingest, worker, batch
and requeue configured with another `redis.partitions` stops with a one-line config error (exit 2)
instead of queueing into, or reading, streams the others never see. On the single Redis and on the
real 3-master cluster."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from redis.crc import key_slot

from leadctl.config import Settings, load_settings
from leadctl.connections import open_async_redis
from leadctl.errors import ConfigError
from leadctl.local.namespaces import purge_namespace
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.queue import keys, streams
from tests.support.cli import ingest_ok, run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.servers import RedisTarget
from tests.support.state import statuses


def mismatch(configured: int, recorded: int) -> str:
    """The one line a process configured with ``configured`` partitions prints on sms's queue."""
    noun = "partition" if recorded == 1 else "partitions"
    return (
        f"error: redis.partitions is {configured} here, but the sms queue in Redis has {recorded} {noun}: "
        f"set redis.partitions: {recorded} on every host (to change it, see README, Deployment, Partitions)\n"
    )


def with_partitions(env: dict[str, str], partitions: int) -> dict[str, str]:
    return {**env, "LEADCTL_REDIS__PARTITIONS": str(partitions)}


def test_every_command_with_another_partition_count_fails_and_the_same_count_works(
    settings: Settings, redis_target: RedisTarget, tmp_path: Path, pg: psycopg.Connection
) -> None:
    ns, client = settings.namespace, redis_target.client
    one, four = with_partitions(redis_target.env, 1), with_partitions(redis_target.env, 4)
    write_leads(tmp_path / "leads.csv", 200)
    write_leads(tmp_path / "more.csv", 50, start=200)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", one)
        recorded = keys.partition_count(ns, "sms")
        assert client.get(recorded) == b"1"
        assert key_slot(recorded.encode()) == key_slot(keys.stream(ns, "sms").encode())

        commands = {
            "work": ["work", "--channel", "sms", "--workers", "1", "--burst", "--json"],
            "batch": ["batch", "--workers", "1", "--json"],
            "requeue": ["requeue", "--json"],
            "ingest": ["ingest", str(tmp_path / "more.csv"), "--json"],
        }
        for name, args in commands.items():
            refused = run_leadctl(["--config", str(config), *args], four)
            assert (refused.returncode, refused.stdout) == (2, ""), (name, refused.stderr)
            assert refused.stderr == mismatch(4, 1), name
        assert sandbox.stats()["accepted"] == 0
        assert statuses(pg, ns) == Counter({"queued": 200})  # the refused ingest wrote nothing
        assert not any(client.exists(stream) for stream in keys.streams(ns, "sms", 4)[1:])

        worked = run_leadctl(["--config", str(config), *commands["work"]], one)
        assert worked.returncode == 0, worked.stderr
        assert json.loads(worked.stdout)["statuses"] == {"sent": 200}
    assert client.get(recorded) == b"1"


def test_a_worker_checks_the_recorded_count_before_it_creates_a_stream(
    settings: Settings, redis_target: RedisTarget
) -> None:
    ns, client = settings.namespace, redis_target.client
    streams.ensure_group(client, ns, "sms", 1)
    worker_settings = load_settings(environ=redis_target.env)

    async def ensure(partitions: int) -> None:
        assert worker_settings.redis.url is not None
        async_client = await open_async_redis(worker_settings.redis.url, worker_settings)
        try:
            await streams.StreamConsumer(async_client, ns, "sms", "host:1:sms:0", partitions).ensure_group()
        finally:
            await async_client.aclose()

    with pytest.raises(ConfigError, match=r"redis\.partitions is 4 here, .* has 1 partition: "):
        asyncio.run(ensure(4))
    assert not any(client.exists(stream) for stream in keys.streams(ns, "sms", 4)[1:])
    asyncio.run(ensure(1))
    with pytest.raises(ConfigError, match=r"redis\.partitions is 2 here, .* has 1 partition: "):
        streams.ensure_group(client, ns, "sms", 2)


def test_requeue_records_the_count_again_after_redis_lost_it_and_cleanup_takes_it(
    settings: Settings,
    redis_target: RedisTarget,
    service_urls: tuple[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    ns, client, partitions = settings.namespace, redis_target.client, redis_target.partitions
    phones = write_leads(tmp_path / "leads.csv", 100)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", redis_target.env)
        forgot = run_leadctl(["--config", str(config), "forget", phones[0], "--json"], redis_target.env)
        assert forgot.returncode == 0, forgot.stderr
        assert json.loads(forgot.stdout)["stream_entries"] == 1

        for key in client.scan_iter(match=keys.namespace_pattern(ns)):  # Redis lost everything
            client.delete(key)
        requeued = run_leadctl(["--config", str(config), "requeue", "--json"], redis_target.env)
        assert requeued.returncode == 0, requeued.stderr
        assert json.loads(requeued.stdout)["appended"] == 99
        assert client.get(keys.partition_count(ns, "sms")) == str(partitions).encode()

        other = partitions + 1
        refused = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"],
            with_partitions(redis_target.env, other),
        )
        assert (refused.returncode, refused.stderr) == (2, mismatch(other, partitions))
        worked = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst", "--json"],
            redis_target.env,
        )
        assert worked.returncode == 0, worked.stderr
        assert sandbox.stats()["accepted"] == 99 and sandbox.stats()["duplicates"] == 0

    purge_namespace(client, service_urls[1], ns)
    assert list(client.scan_iter(match=keys.namespace_pattern(ns))) == []
