"""Helpers for the reliability tests: lead files, configs, and reading the final state."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.conftest import run_leadctl


def write_leads(path: Path, count: int, start: int = 0) -> list[str]:
    """A CSV of ``count`` Brazilian mobiles in mixed formats; returns their E.164 forms."""
    phones, lines = [], ["nome,telefone,email,canal"]
    for i in range(start, start + count):
        local = f"9{8000_0000 + i:08d}"
        phones.append(f"+5511{local}")
        written = f"(11) {local[:5]}-{local[5:]}" if i % 2 else f"+55 11 {local}"
        lines.append(f"Lead {i},{written},lead{i}@example.com,SMS")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return phones


def sandbox_config(path: Path, base_url: str, extra: str = "") -> Path:
    """A config sending sms through the sandbox at ``base_url``."""
    path.write_text(
        "channels:\n  sms:\n    provider: twilio\n    template: 'Oi {{ name }}!'\n"
        f"providers:\n  twilio:\n    base_url: {base_url}\n    account_sid: {SANDBOX_ACCOUNT_SID}\n"
        f"    auth_token: {SANDBOX_AUTH_TOKEN}\n    from: '+15005550006'\n" + extra,
        encoding="utf-8",
    )
    return path


def ingest_ok(config: Path, leads: Path, env: dict[str, str], *options: str) -> dict[str, Any]:
    """Ingest ``leads`` with the real command; the test fails unless it exits 0. Returns its report."""
    result = run_leadctl(["--config", str(config), "ingest", str(leads), "--json", *options], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def statuses(pg: psycopg.Connection, namespace: str, channel: str = "sms") -> Counter[str]:
    rows = pg.execute(
        f'SELECT status, count(*) FROM "{namespace}".lead_deliveries WHERE channel = %s GROUP BY 1',
        (channel,),
    ).fetchall()
    return Counter(dict(rows))
