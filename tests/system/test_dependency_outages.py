"""Redis and PostgreSQL restarted in the middle of a run: workers pause, resume, lose and repeat nothing.

Each test runs its own private server (leadctl's embedded one, in a temporary data dir) so that
restarting it disturbs no other test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.local.services import resolve_urls, stop_embedded
from leadctl.queue import keys
from tests.support.cli import ingest_ok, start_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.waiting import wait_for

LEADS = 2000


@pytest.fixture
def private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="leadctl-outage-"))
    yield path
    stop_embedded(path)
    shutil.rmtree(path, ignore_errors=True)


def private_server(settings: Settings, data_dir: Path, which: str) -> str:
    """Start (or restart) the private embedded server ``which``; return its URL."""
    private = settings.model_copy(deep=True)
    private.data_dir = data_dir
    if which == "redis":
        private.redis.url = None
    else:
        private.database.url = None
    redis_url, database_url = resolve_urls(private, lambda _: None)
    return redis_url if which == "redis" else database_url


def final_state(database_url: str, redis_url: str, namespace: str) -> tuple[Counter[str], int, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f'SELECT status, count(*) FROM "{namespace}".lead_deliveries GROUP BY 1'
        ).fetchall()
    client = redis.Redis.from_url(redis_url)
    stream = keys.stream(namespace, "sms")
    length, pending = client.xlen(stream), client.xpending(stream, keys.GROUP)["pending"]
    client.close()
    return Counter(dict(rows)), length, pending


@pytest.mark.parametrize("which", ["redis", "postgresql"])
def test_restart_during_a_run(
    which: str, settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, private_dir: Path
) -> None:
    url = private_server(settings, private_dir, which)
    env = {**leadctl_env, "LEADCTL_REDIS_URL" if which == "redis" else "LEADCTL_DATABASE_URL": url}
    # waits for a connection give up after 1 s, so the outage surfaces instead of being waited out
    env["LEADCTL_DATABASE__CONNECT_TIMEOUT_MS"] = "1000"
    redis_url, database_url = env["LEADCTL_REDIS_URL"], env["LEADCTL_DATABASE_URL"]
    unavailable = "Redis unavailable" if which == "redis" else "PostgreSQL unavailable"
    log = tmp_path / "work.log"
    write_leads(tmp_path / "leads.csv", LEADS)
    with sandbox_in_thread(latency_ms=20, seed=5) as sandbox, log.open("w", encoding="utf-8") as stderr_file:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", env)
        work = ["work", "--channel", "sms", "--workers", "2", "--concurrency", "10", "--burst"]
        run = start_leadctl(["--config", str(config), *work], env, stderr=stderr_file)
        wait_for(lambda: sandbox.stats()["accepted"] >= 300)
        stopped = stop_embedded(private_dir, only=which)
        assert [s.name for s in stopped] == [which]
        # the server stays down until a worker has met the outage
        wait_for(lambda: unavailable in log.read_text(encoding="utf-8"), timeout=60, what=unavailable)
        assert private_server(settings, private_dir, which) == url
        run.communicate(timeout=180)
        stats = sandbox.stats()
    stderr = log.read_text(encoding="utf-8")

    assert run.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert unavailable in stderr and "resuming" in stderr, stderr
    statuses, length, pending = final_state(database_url, redis_url, settings.namespace)
    # conservation: accepted = sent + failed + dead + in_doubt + suppressed + still queued
    assert sum(statuses.values()) == LEADS
    assert statuses == Counter({"sent": LEADS})
    assert (length, pending) == (0, 0)
    assert stats["accepted"] == LEADS and stats["duplicates"] == 0
