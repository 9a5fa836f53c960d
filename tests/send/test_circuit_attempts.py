"""A try that open circuits refused is no attempt: PostgreSQL, `stats` and the provider agree on retries.

Each provider's breaker opens after one failure (``breaker_failures: 1``) and stays open a second; every
request fails (the sandbox answers 500). With one send in flight, what happens next is fixed by the
order of the worker's own steps, not by timing: the send after the one that opened the breaker, or
that send's own retry, finds the circuit open. Such a lead waits for the circuit instead of being
dead-lettered unsent, and only the requests it made count as attempts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.send.metrics import OUTCOMES
from tests.support.cli import leadctl_ok, stats_json
from tests.support.files import stats_config, write_leads

BREAKER = "    breaker_failures: 1\n    breaker_reset_s: 1\n"


def _run(tmp_path: Path, env: dict[str, str], leads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ingest ``leads`` leads, send them with one worker and one send in flight; (stats, sandbox stats)."""
    write_leads(tmp_path / "leads.csv", leads)
    with sandbox_in_thread(error_rate=1.0) as down:
        config = stats_config(tmp_path / "leadctl.yaml", down.base_url, BREAKER)
        leadctl_ok(["--config", str(config), "ingest", str(tmp_path / "leads.csv")], env)
        work = ["work", "--channel", "sms", "--workers", "1", "--concurrency", "1", "--burst"]
        leadctl_ok(["--config", str(config), *work], env, codes=(1,))
        return stats_json(config, env)["channels"]["sms"], down.stats()


def _deliveries(pg: psycopg.Connection, namespace: str) -> list[tuple[str, int, str]]:
    rows = pg.execute(f'SELECT status, attempts, error_code FROM "{namespace}".lead_deliveries ORDER BY 1')
    return rows.fetchall()


def _check_retries(sms: dict[str, Any], seen: dict[str, Any], deliveries: list[tuple[str, int, str]]) -> None:
    """The stats test's reconciliation: `stats`, PostgreSQL and the provider count the same retries."""
    finished = sum(sms[status] for status in OUTCOMES)
    assert sms["retried"] == sum(max(attempts - 1, 0) for _, attempts, _ in deliveries)
    assert sms["retried"] == seen["requests"] - finished
    assert sum(attempts for _, attempts, _ in deliveries) == seen["requests"]
    assert sms["error_rate"] == 1.0


def test_a_lead_the_open_circuit_refused_is_sent_once_it_closes_not_dead_lettered_unsent(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    # one attempt each: the first lead's 500 opens the breaker; the second lead's first try, the
    # worker's very next send, finds it open (it used to be dead at once, never sent, "attempts" 1)
    env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__MAX_ATTEMPTS": "1"}
    sms, seen = _run(tmp_path, env, leads=2)

    deliveries = _deliveries(pg, settings.namespace)
    _check_retries(sms, seen, deliveries)
    assert deliveries == [("dead", 1, "20500"), ("dead", 1, "20500")]  # each failed by its one request
    assert seen["requests"] == seen["errors"] == 2
    assert sms["retried"] == 0


def test_a_retry_the_open_circuit_refused_waits_for_it_and_is_not_counted(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    # two attempts: the lead's first 500 opens the breaker and its retry, right after it, finds the
    # circuit open (it used to be dead then, after one request, with "attempts" 2)
    env = {
        **leadctl_env,
        "LEADCTL_CHANNELS__SMS__RETRY_INITIAL_MS": "0",
        "LEADCTL_CHANNELS__SMS__RETRY_MAX_MS": "0",
    }
    sms, seen = _run(tmp_path, env, leads=1)

    deliveries = _deliveries(pg, settings.namespace)
    _check_retries(sms, seen, deliveries)
    assert deliveries == [("dead", 2, "20500")]  # its second request was the breaker's probe
    assert seen["requests"] == seen["errors"] == 2
    assert sms["retried"] == 1
