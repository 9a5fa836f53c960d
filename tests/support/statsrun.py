"""Helpers of the `leadctl stats` tests: a sandbox config, lead files, the real commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.conftest import run_leadctl


def write_config(path: Path, base_url: str, extra: str = "") -> Path:
    """sms through the sandbox: 2 attempts with tiny backoff, a 300 ms read timeout, 0.01 USD a message."""
    path.write_text(
        "channels:\n  sms:\n    provider: twilio\n    template: 'Oi {{ name }}!'\n    max_attempts: 2\n"
        "    retry_initial_ms: 1\n    retry_max_ms: 5\n"
        f"providers:\n  twilio:\n    base_url: {base_url}\n    account_sid: {SANDBOX_ACCOUNT_SID}\n"
        f"    auth_token: {SANDBOX_AUTH_TOKEN}\n    from: '+15005550006'\n    read_timeout_ms: 300\n"
        "    price: {sms: 0.01}\n" + extra,
        encoding="utf-8",
    )
    return path


def write_leads(path: Path, first: int, count: int, extra_phones: tuple[str, ...] = ()) -> list[str]:
    """A CSV of ``count`` Brazilian mobiles from ``first`` on, plus ``extra_phones``; returns the phones."""
    phones = [f"+5511{980_000_000 + first + i}" for i in range(count)] + list(extra_phones)
    lines = ["nome,telefone"] + [f"Lead {i},{phone}" for i, phone in enumerate(phones)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return phones


def leadctl_ok(args: list[str], env: dict[str, str], codes: tuple[int, ...] = (0,)) -> str:
    """Run a command that must exit with one of ``codes``; return its stdout."""
    result = run_leadctl(args, env)
    assert result.returncode in codes, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def stats_json(config: Path, env: dict[str, str]) -> dict[str, Any]:
    return json.loads(leadctl_ok(["--config", str(config), "stats", "--json"], env))
