"""Every error path of the command line: one line on stderr, the documented exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import assert_one_line_error, run_leadctl


def test_missing_input_file(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    result = run_leadctl(["ingest", str(tmp_path / "nope.csv")], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "nope.csv")


def test_input_without_phone_or_email_column(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("nome,cidade\nAna,Recife\n", encoding="utf-8")
    result = run_leadctl(["ingest", str(path)], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "leads.csv", "phone")


def test_bad_config(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("worker:\n  batch_size: -5\n", encoding="utf-8")
    result = run_leadctl(["--config", str(config), "stats"], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "worker.batch_size")


def test_missing_config_file(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    result = run_leadctl(["--config", str(tmp_path / "missing.yaml"), "stats"], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "missing.yaml")


@pytest.mark.parametrize("command", [["stats"], ["work", "--channel", "sms", "--burst"]])
def test_redis_unreachable_names_redis_and_masks_password(
    leadctl_env: dict[str, str], command: list[str]
) -> None:
    env = {**leadctl_env, "LEADCTL_REDIS_URL": "redis://:hunter2secret@127.0.0.1:1/0"}
    result = run_leadctl(command, env)
    assert result.returncode == 3
    assert_one_line_error(result.stderr, "Redis unreachable", "127.0.0.1:1")
    assert "hunter2secret" not in result.stderr


def test_postgres_unreachable_names_postgres_and_masks_password(
    leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("name,phone\nAna,+5511987654321\n", encoding="utf-8")
    env = {**leadctl_env, "LEADCTL_DATABASE_URL": "postgresql://bob:hunter2secret@127.0.0.1:1/db"}
    result = run_leadctl(["ingest", str(path)], env)
    assert result.returncode == 3
    assert_one_line_error(result.stderr, "PostgreSQL unreachable", "127.0.0.1:1")
    assert "hunter2secret" not in result.stderr


def test_unknown_channel_option(leadctl_env: dict[str, str]) -> None:
    result = run_leadctl(["work", "--channel", "fax"], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "fax")


def test_batch_is_listed_in_help(leadctl_env: dict[str, str]) -> None:
    result = run_leadctl(["--help"], leadctl_env)
    assert result.returncode == 0
    for command in ("ingest", "work", "batch", "stats", "sandbox", "services", "demo"):
        assert command in result.stdout
