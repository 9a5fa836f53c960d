"""The embedded Redis and PostgreSQL, started, reused, stopped and restarted for real."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

import leadctl
from leadctl.config import DatabaseSettings, RedisSettings, Settings
from leadctl.errors import DependencyError
from leadctl.local import services
from leadctl.local.services import _redis_died, embedded_status, resolve_urls, stop_embedded


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside pytest's basetemp: as root, postgres runs as the 'pgserver' user and needs to
    traverse it, but every pytest session start chmods /tmp/pytest-of-<user> back to 0700."""
    path = Path(tempfile.mkdtemp(prefix="leadctl-services-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir(scratch: Path) -> Iterator[Path]:
    path = scratch / "data"
    yield path
    stop_embedded(path)


def start(data_dir: Path, **settings: object) -> tuple[str, str, list[str]]:
    said: list[str] = []
    redis_url, database_url = resolve_urls(Settings(data_dir=data_dir, **settings), said.append)
    return redis_url, database_url, said


def test_starts_both_under_a_relative_data_dir_and_real_clients_work(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir.parent)
    redis_url, database_url, said = start(Path(data_dir.name))

    assert redis_url.startswith("redis://127.0.0.1:")
    assert said == [
        "leadctl: started embedded Redis and PostgreSQL in data/ (stop them with `leadctl services stop`)"
    ]
    assert (data_dir / "redis" / "appendonly.aof").is_file()
    assert (data_dir / "postgres" / "PG_VERSION").is_file()
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    statuses = embedded_status(data_dir)
    assert [(s.name, s.running, s.url) for s in statuses] == [
        ("redis", True, redis_url),
        ("postgresql", True, database_url),
    ]
    assert all(s.pid for s in statuses)


def test_second_resolve_reuses_running_servers(data_dir: Path) -> None:
    first = start(data_dir)
    second = start(data_dir)

    assert second[:2] == first[:2]
    assert second[2] == []


def test_data_survives_stop_and_restart(data_dir: Path) -> None:
    redis_url, database_url, _ = start(data_dir)
    with redis.Redis.from_url(redis_url) as client:
        client.set("kept", "yes")
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('yes')")

    stopped = stop_embedded(data_dir)
    assert [(s.name, s.running) for s in stopped] == [("redis", False), ("postgresql", False)]
    assert not any(s.running for s in embedded_status(data_dir))

    redis_url, database_url, said = start(data_dir)
    assert len(said) == 1
    with redis.Redis.from_url(redis_url) as client:
        assert client.get("kept") == b"yes"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("yes",)]


def test_stop_then_status_shows_nothing_running(data_dir: Path) -> None:
    start(data_dir)

    assert {s.name for s in stop_embedded(data_dir)} == {"redis", "postgresql"}
    statuses = embedded_status(data_dir)
    assert [(s.name, s.running, s.url, s.pid) for s in statuses] == [
        ("redis", False, None, None),
        ("postgresql", False, None, None),
    ]
    assert stop_embedded(data_dir) == []


def test_redis_restarts_on_its_port_after_being_killed(data_dir: Path) -> None:
    redis_url, _, _ = start(data_dir)
    with redis.Redis.from_url(redis_url) as client:
        client.set("kept", "yes")
    subprocess.run(["kill", "-KILL", str(embedded_status(data_dir)[0].pid)], check=True)

    again, _, said = start(data_dir)
    assert again == redis_url
    assert said == [
        f"leadctl: started embedded Redis in {data_dir}/ (stop them with `leadctl services stop`)"
    ]
    with redis.Redis.from_url(again) as client:
        assert client.get("kept") == b"yes"


def _kill_and_hold_port(data_dir: Path, redis_url: str) -> socket.socket:
    """SIGKILL the embedded Redis, wait until it is gone, and listen on its port as a stand-in for its
    last threads (or another program) still holding it."""
    process = psutil.Process(embedded_status(data_dir)[0].pid)
    process.kill()
    psutil.wait_procs([process], timeout=10)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])))
    holder.listen()
    return holder


def test_redis_waits_for_its_port_to_come_free_after_being_killed(data_dir: Path) -> None:
    redis_url, _, _ = start(data_dir)
    holder = _kill_and_hold_port(data_dir, redis_url)
    threading.Timer(0.5, holder.close).start()

    again, _, _ = start(data_dir)

    assert again == redis_url
    with redis.Redis.from_url(again) as client:
        assert client.ping()


def test_redis_moves_to_a_free_port_when_its_own_stays_taken(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "PORT_RELEASE_S", 0.3)
    redis_url, _, _ = start(data_dir)
    with _kill_and_hold_port(data_dir, redis_url):
        again, _, _ = start(data_dir)

    assert again != redis_url
    with redis.Redis.from_url(again) as client:
        assert client.ping()
    assert embedded_status(data_dir)[0].url == again


def test_configured_urls_are_returned_untouched(data_dir: Path) -> None:
    urls = ("redis://cache.internal:6380/2", "postgresql://app:secret@db.internal/leads")
    settings = Settings(
        data_dir=data_dir, redis=RedisSettings(url=urls[0]), database=DatabaseSettings(url=urls[1])
    )
    said: list[str] = []

    assert resolve_urls(settings, said.append) == urls
    assert said == []
    assert not data_dir.exists()


def test_only_the_missing_server_is_embedded(data_dir: Path) -> None:
    redis_url, database_url, said = start(data_dir, redis=RedisSettings(url="redis://cache.internal:6380/2"))

    assert redis_url == "redis://cache.internal:6380/2"
    assert said == [
        f"leadctl: started embedded PostgreSQL in {data_dir}/ (stop them with `leadctl services stop`)"
    ]
    assert [s.running for s in embedded_status(data_dir)] == [False, True]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_concurrent_processes_start_one_server_each(data_dir: Path) -> None:
    script = (
        "import json, sys; from pathlib import Path; from leadctl.config import Settings;"
        "from leadctl.local.services import resolve_urls; said = [];"
        "urls = resolve_urls(Settings(data_dir=Path(sys.argv[1])), said.append);"
        "print(json.dumps([*urls, len(said)]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(leadctl.__file__).parents[1])}
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, env=env)
        for _ in range(6)
    ]
    results = [json.loads(process.communicate(timeout=60)[0]) for process in processes]

    assert all(process.returncode == 0 for process in processes)
    assert len({(redis_url, database_url) for redis_url, database_url, _ in results}) == 1
    assert sum(announced for _, _, announced in results) == 1


def test_long_data_dir_path_still_works(scratch: Path) -> None:
    data_dir = scratch / ("d" * 100) / "data"  # too long for a unix socket inside PGDATA
    try:
        _, database_url, _ = start(data_dir, redis=RedisSettings(url="redis://cache.internal:6380/2"))
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_embedded(data_dir)


def test_redis_failing_to_start_is_one_line_naming_the_log(data_dir: Path) -> None:
    (data_dir / "redis").mkdir(parents=True)
    (data_dir / "redis" / "appendonly.aof").write_text("not an append only file\n")

    with pytest.raises(DependencyError) as caught:
        start(data_dir, database=DatabaseSettings(url="postgresql://db.internal/leads"))
    message = str(caught.value)
    assert "\n" not in message
    assert "embedded Redis did not start" in message
    assert str(data_dir / "redis" / "redis.log") in message


def test_postgres_failing_to_start_is_one_line_naming_the_log(data_dir: Path) -> None:
    (data_dir / "postgres").mkdir(parents=True)
    (data_dir / "postgres" / "PG_VERSION").write_text("16\n")  # a PGDATA without its configuration

    with pytest.raises(DependencyError) as caught:
        start(data_dir, redis=RedisSettings(url="redis://cache.internal:6380/2"))
    message = str(caught.value)
    assert "\n" not in message
    assert "embedded PostgreSQL did not start" in message
    assert str(data_dir / "postgres" / "log") in message


def test_a_pidfile_being_written_is_no_sign_of_death(tmp_path: Path) -> None:
    """redis-server creates its pidfile, then writes the pid: read in between, the file is empty. That
    was once taken for a dead server ("embedded Redis did not start ... Ready to accept connections")."""
    pidfile = tmp_path / "redis.pid"
    assert not _redis_died(pidfile)  # not written yet
    pidfile.write_text("")
    assert not _redis_died(pidfile)  # being written
    gone = subprocess.Popen(["true"])
    gone.wait()
    pidfile.write_text(f"{gone.pid}\n")
    assert _redis_died(pidfile)
