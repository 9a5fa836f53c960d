"""--config, --verbose/-v and --quiet/-q where people type them: before the subcommand and after it.

Each test runs the real command line and checks that the option took effect: --quiet leaves stderr
empty where the command otherwise tells a person what it did, -v adds leadctl's log lines (and
the traceback of an error), --config reads that file, and --json prints one JSON object on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from leadctl.config import Settings
from tests.support.cli import run_leadctl
from tests.support.files import write_leads
from tests.support.state import statuses

VERBOSE_LINE = "leadctl: namespace "
"""The start of the log line -v adds: which namespace, Redis and PostgreSQL a command uses."""


def one_json_object(stdout: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object and nothing else."""
    data = json.loads(stdout)
    assert isinstance(data, dict), stdout
    return data


@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
def test_ingest_file_quiet_json(leadctl_env: dict[str, str], tmp_path: Path, before: bool) -> None:
    path = tmp_path / "leads.csv"
    write_leads(path, 3)
    args = (
        ["--quiet", "ingest", str(path), "--json"] if before else ["ingest", str(path), "--quiet", "--json"]
    )
    result = run_leadctl(args, leadctl_env)
    assert result.returncode == 0, result.stderr
    assert one_json_object(result.stdout)["accepted"] == 3
    assert result.stderr == ""
    # without --json ingest tells a person what it did on stderr; --quiet (here, or before) hides it
    again = tmp_path / "again.csv"
    write_leads(again, 3, start=3)
    quiet = run_leadctl(["-q", "ingest", str(again)] if before else ["ingest", str(again), "-q"], leadctl_env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    more = tmp_path / "more.csv"
    write_leads(more, 3, start=6)
    told = run_leadctl(["ingest", str(more)], leadctl_env)
    assert told.returncode == 0 and "3 rows: 3 accepted" in told.stderr


@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
def test_stats_json_verbose(settings: Settings, leadctl_env: dict[str, str], before: bool) -> None:
    result = run_leadctl(["-v", "stats", "--json"] if before else ["stats", "--json", "-v"], leadctl_env)
    assert result.returncode == 0, result.stderr
    assert set(one_json_object(result.stdout)) >= {"channels", "workers"}
    assert f"{VERBOSE_LINE}{settings.namespace}: Redis at " in result.stderr
    assert "leadctl: config: " in result.stderr
    plain = run_leadctl(["stats", "--json"], leadctl_env)
    assert plain.returncode == 0 and VERBOSE_LINE not in plain.stderr


@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
def test_work_channel_burst_quiet(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection, before: bool
) -> None:
    env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__WORKERS": "1"}  # the config's, so the command is as typed
    path = tmp_path / "leads.csv"
    write_leads(path, 5)
    assert run_leadctl(["ingest", str(path), "-q"], env).returncode == 0
    args = (
        ["-q", "work", "--channel", "sms", "--burst"]
        if before
        else ["work", "--channel", "sms", "--burst", "-q"]
    )
    result = run_leadctl(args, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert statuses(pg, settings.namespace) == {"sent": 5}  # the default provider, `log`, sends nothing out
    told = run_leadctl(["work", "--channel", "sms", "--burst"], env)
    assert told.returncode == 0
    assert "sms: 1 workers x 50 in flight" in told.stderr and "nothing to send" in told.stderr


def test_verbose_shows_the_traceback_of_an_error_in_both_places(leadctl_env: dict[str, str]) -> None:
    env = {**leadctl_env, "LEADCTL_REDIS_URL": "redis://127.0.0.1:1/0"}
    for args in (["-v", "stats"], ["stats", "-v"], ["stats", "--verbose"], ["stats", "-qv"]):
        result = run_leadctl(args, env)
        assert result.returncode == 3, args
        assert "Traceback" in result.stderr, args
        assert result.stderr.rstrip().splitlines()[-1].startswith("error: Redis unreachable"), args
    terse = run_leadctl(["stats"], env)
    assert terse.returncode == 3 and "Traceback" not in terse.stderr


def test_config_after_the_subcommand_is_read(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("worker:\n  batch_size: -5\n", encoding="utf-8")
    for args in (["--config", str(config), "stats"], ["stats", "--config", str(config)]):
        result = run_leadctl(args, leadctl_env)
        assert result.returncode == 2, args
        assert "worker.batch_size" in result.stderr and "bad.yaml" in result.stderr


def test_global_options_after_a_nested_command(leadctl_env: dict[str, str]) -> None:
    listed = run_leadctl(["dlq", "list", "-q", "--json"], leadctl_env)
    assert listed.returncode == 0, listed.stderr
    assert one_json_object(listed.stdout)["total"] == 0
    quiet = run_leadctl(["dlq", "purge", "--yes", "-q"], leadctl_env)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    told = run_leadctl(["dlq", "purge", "--yes"], leadctl_env)
    assert told.returncode == 0 and "purged 0 dead letters" in told.stderr
    verbose = run_leadctl(["doubt", "list", "--json", "-v"], leadctl_env)
    assert verbose.returncode == 0 and VERBOSE_LINE in verbose.stderr
