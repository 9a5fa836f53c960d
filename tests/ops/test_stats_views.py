"""The dashboard: rendered with an alert, and `stats --watch` riding out a real Redis restart."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from rich.console import Console

from leadctl.config import Settings
from leadctl.connections import open_postgres, open_redis
from leadctl.local.services import REDIS_SERVER
from leadctl.ops.dashboard import live_view, render
from leadctl.ops.stats import collect
from tests.support.cli import leadctl_ok
from tests.support.files import stats_config, write_leads
from tests.support.servers import free_port, redis_answers
from tests.support.waiting import wait_for


def test_dashboard_renders_figures_cost_and_an_active_alert(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    write_leads(tmp_path / "leads.csv", 20)
    config = stats_config(tmp_path / "leadctl.yaml", "http://127.0.0.1:9")
    leadctl_ok(["--config", str(config), "ingest", str(tmp_path / "leads.csv")], leadctl_env)
    settings.alerts.queue_size = 5
    client = open_redis(settings.redis.url or "", settings)
    with open_postgres(settings.database.url or "", settings) as conn:
        snapshot = collect(client, conn, settings)
    client.close()

    console = Console(record=True, width=120, color_system=None)
    console.print(render(snapshot, full=True))
    screen = console.export_text()
    assert f"leadctl · {settings.namespace}" in screen
    assert re.search(r"queued\s+│\s+20 │", screen)
    assert "alerts (1)" in screen
    assert "queue_size  sms: 20 leads waiting (alert above 5)" in screen
    assert "leads/min, last 15 minutes" in screen
    assert "Cost (USD)" in screen and "WhatsApp" in screen and "Total" in screen
    assert "campaigns" in screen and "leads" in screen

    console = Console(record=True, width=120, color_system=None)
    console.print(live_view(snapshot, "Redis unreachable at redis://127.0.0.1:1/0: refused"))
    screen = console.export_text()
    assert "reconnecting… Redis unreachable" in screen and "queue_size" in screen


@contextlib.contextmanager
def _private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of our own (no persistence), so the test can stop it under a running dashboard."""
    process = subprocess.Popen(
        [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), what="the private redis-server")
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


class _Terminal:
    """A command on a pseudo-terminal (so rich draws its live display), its screen output collected."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"}, close_fds=True
        )
        os.close(slave)
        self.output = ""

    def _pump(self, wait_s: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait_s)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the command has exited
                self.output += os.read(self.master, 65536).decode("utf-8", "replace")

    def read_until(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.compile(pattern).search(self.output, start)):
            assert time.monotonic() < deadline, f"no {pattern!r} on screen:\n{self.output[-3000:]}"
            self._pump(0.1)
        return found

    def interrupt(self) -> int:
        """Ctrl-C, as a person would press it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        while self.process.poll() is None and time.monotonic() < deadline:
            self._pump(0.1)
        self._pump(0.1)
        code = self.process.wait(1)
        os.close(self.master)
        return code


_TITLE = r"leadctl · \w+ · (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"


def test_watch_rides_out_a_redis_restart_and_stops_on_ctrl_c(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    port = free_port()
    env = {**leadctl_env, "LEADCTL_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    write_leads(tmp_path / "leads.csv", 5)
    config = stats_config(tmp_path / "leadctl.yaml", "http://127.0.0.1:9")
    with _private_redis(port) as server:
        leadctl_ok(["--config", str(config), "ingest", str(tmp_path / "leads.csv")], env)
        watch = ["--config", str(config), "stats", "--watch", "--interval", "0.3"]
        screen = _Terminal([sys.executable, "-m", "leadctl", *watch], env)
        try:
            screen.read_until(_TITLE, 30)
            server.terminate()
            server.wait(10)
            outage = screen.read_until(r"reconnecting… Redis unreachable", 15)
            for _ in range(3):  # several refreshes while Redis is away: the dashboard keeps running
                outage = screen.read_until(r"reconnecting… Redis unreachable", 15, outage.end())
            assert screen.process.poll() is None
            with _private_redis(port):
                back = time.time()
                while True:  # a snapshot taken after the restart is on screen
                    title = screen.read_until(_TITLE, 15, outage.end())
                    taken = datetime.strptime(title.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                    if taken.timestamp() > back:
                        break
                    outage = title
                code = screen.interrupt()
        finally:
            if screen.process.poll() is None:
                screen.process.kill()
    assert code == 0, screen.output[-2000:]
    assert "Traceback" not in screen.output
