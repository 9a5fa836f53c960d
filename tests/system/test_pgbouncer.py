"""PostgreSQL behind a real PgBouncer in transaction pooling: with `database.pgbouncer: true` ingest
and workers share two server connections (no prepared statements, no session state, the staging
table dropped at each commit) and every lead is sent once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from leadctl.config import Settings
from leadctl.local.cluster import free_ports
from leadctl.local.sandbox.server import sandbox_in_thread
from tests.support.cli import run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.servers import postgres_answers
from tests.support.state import statuses
from tests.support.waiting import wait_for


def _pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


@pytest.fixture
def pgbouncer_url(service_urls: tuple[str, str]) -> Iterator[str]:
    """A PgBouncer in transaction pooling with two server connections, in front of the test database."""
    binary = _pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed: the PgBouncer test needs it")
    target = urlsplit(service_urls[1])
    (port,) = free_ports(1)
    # outside pytest's temp area (0700): pgbouncer runs as the postgres user when the tests run as root
    directory = Path(tempfile.mkdtemp(prefix="leadctl-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{target.username}" "{target.password or ""}"\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 500\n"
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"postgresql://{target.username}@127.0.0.1:{port}{target.path}"

    def up_or_gone() -> bool:
        return process.poll() is not None or postgres_answers(url)

    with contextlib.suppress(AssertionError):  # judged below, with pgbouncer's own words
        wait_for(up_or_gone, what="pgbouncer to accept connections")
    if process.poll() is not None or not postgres_answers(url):
        process.kill()
        pytest.fail(f"pgbouncer did not start: {process.stderr.read().decode() if process.stderr else ''}")
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


def test_ingest_and_workers_behind_pgbouncer_transaction_pooling(
    settings: Settings,
    leadctl_env: dict[str, str],
    pgbouncer_url: str,
    tmp_path: Path,
    pg: psycopg.Connection,
) -> None:
    env = {
        **leadctl_env,
        "LEADCTL_DATABASE_URL": pgbouncer_url,
        "LEADCTL_DATABASE__PGBOUNCER": "true",
        "LEADCTL_INGEST__BATCH_SIZE": "500",
    }
    write_leads(tmp_path / "leads.csv", 3000)
    with sandbox_in_thread(latency_ms=5) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest = run_leadctl(
            ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--json"],
            env,
        )
        assert ingest.returncode == 0, ingest.stderr
        assert json.loads(ingest.stdout)["accepted"] == 3000
        work = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--burst", "--json"], env
        )
        assert work.returncode == 0, work.stderr
        assert json.loads(work.stdout)["statuses"] == {"sent": 3000}
        assert sandbox.stats()["accepted"] == 3000 and sandbox.stats()["duplicates"] == 0
    assert statuses(pg, settings.namespace) == Counter({"sent": 3000})
