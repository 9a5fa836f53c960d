"""The real `leadctl` command line, run as a user runs it: to completion, or in the background."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import psutil


def run_leadctl(
    args: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess and wait for it to exit."""
    return subprocess.run(
        [sys.executable, "-m", "leadctl", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_leadctl(
    args: list[str], env: dict[str, str], stderr: IO[str] | None = None
) -> subprocess.Popen[str]:
    """Start the real command line in the background; its stderr goes to ``stderr`` (a file the test
    reads while it runs) or to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "leadctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
    )


def worker_pids(supervisor: subprocess.Popen[str]) -> list[int]:
    """The worker processes of a running supervisor (spawned multiprocessing children)."""
    children = psutil.Process(supervisor.pid).children()
    return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]


def leadctl_ok(args: list[str], env: dict[str, str], codes: tuple[int, ...] = (0,)) -> str:
    """Run a command that must exit with one of ``codes`` and print no traceback; its stdout."""
    result = run_leadctl(args, env)
    assert result.returncode in codes, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def ingest_ok(config: Path, leads: Path, env: dict[str, str], *options: str) -> dict[str, Any]:
    """Ingest ``leads`` with the real command; the test fails unless it exits 0. Its JSON report."""
    result = run_leadctl(["--config", str(config), "ingest", str(leads), "--json", *options], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stats_json(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """`leadctl stats --json`, which must succeed."""
    return json.loads(leadctl_ok(["--config", str(config), "stats", "--json"], env))


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr holds exactly one `error: ` line, containing every fragment, and no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr
