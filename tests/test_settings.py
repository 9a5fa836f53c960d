"""Every documented setting has a test that fails when the setting stops having its effect.

COVERAGE maps each key of ``configs/leadctl.yaml`` (its commented keys too) and each setting the
README names to the tests that prove it does what it says; ``test_every_documented_key_has_a_test``
keeps the map complete and its tests real. The keys no other test proves are tested here, each by
doing the real thing (Redis, PostgreSQL, the sandbox, the command line) with a value other than its
default, so that a setting read nowhere would make the test fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
import yaml

from leadctl.config import REMOVED_KEYS, ProviderSettings, Settings
from leadctl.connections import Endpoints, open_async_pool, open_postgres, open_redis
from leadctl.errors import DependencyError
from leadctl.ingest import ParseOptions
from leadctl.ingest.pipeline import Ingestor
from leadctl.local.namespaces import purge_namespace
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, sandbox_in_thread
from leadctl.ops.plan import assumptions, make_plan
from leadctl.ops.stats import collect
from leadctl.providers.ratelimit import throttle_for
from leadctl.queue import keys
from leadctl.send.heartbeats import live_workers
from leadctl.send.worker import WorkerOptions, WorkerReport, run_worker
from leadctl.webhooks.server import serve_in_thread
from tests.support import webhooks as kit
from tests.support.cli import ingest_ok, run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.providers import failure, message, provider_settings
from tests.support.servers import free_port
from tests.support.state import statuses
from tests.support.waiting import wait_for

ROOT = Path(__file__).parent.parent
HERE = "test_settings.py"

COVERAGE: dict[str, tuple[str, ...]] = {
    "namespace": (
        "compliance/test_compliance.py::test_frequency_cap_holds_across_concurrent_workers_and_namespaces",
        "store/test_store.py::test_namespace_must_be_an_identifier",
    ),
    "default_region": (f"{HERE}::test_ingest_reads_default_region_columns_and_batch_size",),
    "data_dir": (
        "local/test_services.py::test_starts_both_under_a_relative_data_dir_and_real_clients_work",
        "system/test_end_to_end.py::test_demo_runs_end_to_end_on_configured_servers",
    ),
    "redis.url": ("commands/test_cli_errors.py::test_redis_unreachable_names_redis_and_masks_password",),
    "redis.max_connections": (f"{HERE}::test_redis_max_connections_and_socket_timeout",),
    "redis.socket_timeout_ms": (f"{HERE}::test_redis_max_connections_and_socket_timeout",),
    "redis.cluster": (
        "system/test_cluster.py::test_cluster_settings_from_nodes_or_url",
        "system/test_cluster.py::test_thousand_leads_sent_exactly_once_on_a_partitioned_cluster",
    ),
    "redis.nodes": ("system/test_cluster.py::test_cluster_settings_from_nodes_or_url",),
    "redis.partitions": (
        "queue/test_partitions.py::test_every_command_with_another_partition_count_fails_and_the_same_count_works",
        "system/test_cluster.py::test_thousand_leads_sent_exactly_once_on_a_partitioned_cluster",
    ),
    "database.url": (
        "commands/test_cli_errors.py::test_postgres_unreachable_names_postgres_and_masks_password",
    ),
    "database.pool_size": (f"{HERE}::test_pool_size_caps_the_connections_of_each_worker",),
    "database.connect_timeout_ms": (f"{HERE}::test_connect_timeouts_give_up_on_a_server_that_never_answers",),
    "database.statement_timeout_ms": (f"{HERE}::test_statement_timeout_and_pgbouncer_mode",),
    "database.worker_pool_size": ("ops/test_plan.py::test_config_sets_sender_limits_prices_and_pool_size",),
    "database.pgbouncer": (
        f"{HERE}::test_statement_timeout_and_pgbouncer_mode",
        "system/test_pgbouncer.py::test_ingest_and_workers_behind_pgbouncer_transaction_pooling",
    ),
    "channels.<channel>.provider": (
        "system/test_end_to_end.py::test_thousand_leads_sent_exactly_once",
        "system/test_end_to_end.py::test_email_through_sendgrid_is_packed_many_leads_per_request",
    ),
    "channels.<channel>.providers": (
        "system/test_failover.py::test_a_worker_run_fails_over_and_stats_show_which_provider_sent",
        "system/test_failover.py::test_a_channels_providers_come_from_the_file_or_the_environment",
    ),
    "channels.<channel>.workers": (f"{HERE}::test_channel_workers_are_the_processes_of_work_and_batch",),
    "channels.<channel>.concurrency": (f"{HERE}::test_channel_concurrency_and_the_shutdown_grace",),
    "channels.<channel>.max_attempts": ("ops/test_recovery.py::test_dlq_list_replay_and_purge",),
    "channels.<channel>.template": (
        "system/test_end_to_end.py::test_campaign_templates_and_sms_segments_are_used_and_recorded",
        "send/test_templates.py::test_missing_field_names_it",
    ),
    "channels.<channel>.email": (
        "send/test_templates.py::test_email_override_keeps_the_channels_other_parts",
    ),
    "providers.<name>.type": ("providers/test_adapters.py::test_registry_rejects_bad_config",),
    "providers.<name>.base_url": ("providers/test_adapters.py::test_success_returns_sid_and_is_recorded",),
    "providers.<name>.from": (
        "providers/test_adapters.py::test_whatsapp_uses_prefixed_addresses",
        "providers/test_zenvia.py::test_success_stores_zenvia_id",
        "providers/test_sendgrid.py::test_one_email_stores_x_message_id",
        "providers/test_smtp.py::test_success_stores_message_id_and_delivers_both_parts",
    ),
    "providers.<name>.connect_timeout_ms": (
        f"{HERE}::test_connect_timeouts_give_up_on_a_server_that_never_answers",
    ),
    "providers.<name>.read_timeout_ms": (
        "providers/test_adapters.py::test_read_timeout_is_in_doubt_and_not_resent",
    ),
    "providers.<name>.rate_limit": (
        "providers/test_ratelimit.py::test_a_worker_run_keeps_the_providers_limit",
    ),
    "providers.<name>.burst": ("providers/test_ratelimit.py::test_throttle_for_a_configured_rate",),
    "providers.<name>.rate_limit_per_sender": (
        f"{HERE}::test_rate_limit_per_sender_spaces_each_senders_sends",
        "ops/test_plan.py::test_config_sets_sender_limits_prices_and_pool_size",
    ),
    "providers.<name>.breaker_failures": (
        "system/test_failover.py::test_sends_fail_over_while_the_breaker_is_open_and_come_back_after_the_probe",
    ),
    "providers.<name>.breaker_reset_s": (
        "system/test_failover.py::test_sends_fail_over_while_the_breaker_is_open_and_come_back_after_the_probe",
    ),
    "providers.<name>.price": (
        "ops/test_stats.py::test_every_figure_matches_postgresql_and_the_sandbox",
        "ops/test_plan.py::test_config_sets_sender_limits_prices_and_pool_size",
    ),
    "providers.<name>.currency": (f"{HERE}::test_alert_thresholds_and_the_currency_are_the_configs",),
    "providers.twilio.account_sid": ("providers/test_adapters.py::test_success_returns_sid_and_is_recorded",),
    "providers.twilio.auth_token": (
        "providers/test_adapters.py::test_bad_credentials_are_an_auth_error",
        "webhooks/test_webhooks.py::test_twilio_status_signed_duplicated_and_late",
    ),
    "providers.twilio.content_sid": ("providers/test_adapters.py::test_whatsapp_content_template",),
    "providers.whatsapp_cloud.access_token": (
        "providers/test_whatsapp_cloud.py::test_bad_token_is_an_auth_error",
    ),
    "providers.whatsapp_cloud.phone_number_id": (
        "providers/test_whatsapp_cloud.py::test_unknown_phone_number_id_is_permanent",
    ),
    "providers.whatsapp_cloud.template": (
        "providers/test_whatsapp_cloud.py::test_template_message_fills_body_parameters_from_lead_fields",
    ),
    "providers.whatsapp_cloud.app_secret": (
        "webhooks/test_webhooks.py::test_whatsapp_handshake_statuses_out_of_order_and_opt_outs",
    ),
    "providers.whatsapp_cloud.verify_token": (
        "webhooks/test_webhooks.py::test_whatsapp_handshake_statuses_out_of_order_and_opt_outs",
    ),
    "providers.zenvia.api_token": ("providers/test_zenvia.py::test_bad_token_is_an_auth_error",),
    "providers.zenvia.webhook_token": ("webhooks/test_webhooks.py::test_zenvia_token_statuses_and_reply",),
    "providers.zenvia.webhook_header": (f"{HERE}::test_optout_keywords_and_the_zenvia_webhook_header",),
    "providers.sendgrid.api_key": ("providers/test_sendgrid.py::test_bad_key_is_an_auth_error",),
    "providers.sendgrid.webhook_public_key": (
        "webhooks/test_webhooks.py::test_sendgrid_signed_events_by_lead",
    ),
    "providers.smtp.username": ("providers/test_smtp.py::test_wrong_password_is_an_auth_error",),
    "providers.smtp.password": ("providers/test_smtp.py::test_wrong_password_is_an_auth_error",),
    "providers.webhook.url": ("providers/test_webhook.py::test_success_and_message_id",),
    "providers.webhook.headers": ("providers/test_webhook.py::test_missing_authorization_is_an_auth_error",),
    "campaigns.<campaign>.<channel>.template": (
        "system/test_end_to_end.py::test_campaign_templates_and_sms_segments_are_used_and_recorded",
        "send/test_templates.py::test_campaigns_load_from_config",
    ),
    "worker.batch_size": (f"{HERE}::test_worker_batch_size_is_how_many_entries_a_read_takes",),
    "worker.visibility_timeout_s": (
        f"{HERE}::test_visibility_timeout_is_when_a_dead_workers_entries_come_back",
    ),
    "worker.block_ms": (f"{HERE}::test_block_ms_is_how_long_a_read_waits_for_new_entries",),
    "worker.shutdown_grace_s": (f"{HERE}::test_channel_concurrency_and_the_shutdown_grace",),
    "worker.metrics": (f"{HERE}::test_metrics_false_publishes_no_counters",),
    "batch.max_seconds": (f"{HERE}::test_batch_max_seconds_is_the_runs_time_budget",),
    "ingest.batch_size": (f"{HERE}::test_ingest_reads_default_region_columns_and_batch_size",),
    "ingest.columns": (
        f"{HERE}::test_ingest_reads_default_region_columns_and_batch_size",
        "ingest/test_parse.py::test_config_columns",
    ),
    "webhooks.host": (f"{HERE}::test_webhooks_serve_listens_on_the_configured_host_and_port",),
    "webhooks.port": (f"{HERE}::test_webhooks_serve_listens_on_the_configured_host_and_port",),
    "webhooks.public_url": ("webhooks/test_webhooks.py::test_twilio_signature_over_the_public_url",),
    "webhooks.max_body_bytes": (
        "webhooks/test_webhooks.py::test_opt_out_on_every_channel_and_oversized_bodies",
    ),
    "webhooks.flush_ms": (f"{HERE}::test_webhook_events_are_written_every_flush_ms_or_batch_size",),
    "webhooks.batch_size": (f"{HERE}::test_webhook_events_are_written_every_flush_ms_or_batch_size",),
    "optout.scope": (
        "webhooks/test_webhooks.py::test_opt_out_on_every_channel_and_oversized_bodies",
        "compliance/test_compliance.py::test_opt_out_reply_suppresses_the_contact_and_its_queued_leads",
    ),
    "optout.keywords": (f"{HERE}::test_optout_keywords_and_the_zenvia_webhook_header",),
    "compliance.quiet_hours.<channel>.allow": (
        f"{HERE}::test_send_windows_time_zones_and_campaign_windows",
        "compliance/test_compliance.py::test_quiet_hours_defer_and_send_once_the_window_opens",
    ),
    "compliance.quiet_hours.<channel>.days": (
        f"{HERE}::test_send_windows_time_zones_and_campaign_windows",
        "compliance/test_compliance.py::test_batch_reports_leads_outside_their_window_as_deferred",
    ),
    "compliance.timezone_field": (f"{HERE}::test_send_windows_time_zones_and_campaign_windows",),
    "compliance.default_timezone": (f"{HERE}::test_send_windows_time_zones_and_campaign_windows",),
    "compliance.caps": (
        "compliance/test_compliance.py::test_frequency_cap_holds_across_concurrent_workers_and_namespaces",
    ),
    "compliance.cap_action": (f"{HERE}::test_cap_action_skip_suppresses_instead_of_deferring",),
    "compliance.caps_scope": (
        "compliance/test_compliance.py::test_frequency_cap_holds_across_concurrent_workers_and_namespaces",
    ),
    "compliance.campaigns.<campaign>.quiet_hours": (
        f"{HERE}::test_send_windows_time_zones_and_campaign_windows",
        "compliance/test_rules.py::test_caps_and_compliance_config",
    ),
    "compliance.campaigns.<campaign>.require_consent": (
        "compliance/test_compliance.py::test_consent_required_by_a_campaign",
    ),
    "alerts.queue_size": (
        f"{HERE}::test_alert_thresholds_and_the_currency_are_the_configs",
        "ops/test_stats.py::test_statuses_add_up_while_leads_are_read_claimed_and_waiting",
    ),
    "alerts.error_rate": (f"{HERE}::test_alert_thresholds_and_the_currency_are_the_configs",),
    "alerts.stalled_s": (f"{HERE}::test_alert_thresholds_and_the_currency_are_the_configs",),
    "alerts.dead_letters": (f"{HERE}::test_alert_thresholds_and_the_currency_are_the_configs",),
    "alerts.webhook_url": (
        "ops/test_stats_alerts.py::test_an_alert_is_posted_once_when_it_starts_and_once_when_it_ends",
    ),
}
"""Documented key -> the tests (``path::name`` under tests/) that fail when it stops having its effect.
``<channel>``, ``<campaign>`` and ``<name>`` stand for any one; a key covers the keys inside it."""


# --- the map is complete, and its tests exist ---------------------------------------------------

_COMMENTED_KEY = re.compile(r"^(\s*)# ?(\s*[A-Za-z_][\w-]*:(\s.*)?)$")
_README_KEY = re.compile(r"`([a-z_]+(?:\.[a-z_<>*]+)+)(?::[^`]*)?`")
_PROVIDER_KEYS = {field.alias or name for name, field in ProviderSettings.model_fields.items()}


def _example_keys() -> set[str]:
    """Every leaf key of the example config, its commented-out examples uncommented."""
    lines = []
    for line in (ROOT / "configs" / "leadctl.yaml").read_text(encoding="utf-8").splitlines():
        found = _COMMENTED_KEY.match(line)
        lines.append(found.group(1) + found.group(2) if found else line)
    tree = yaml.safe_load("\n".join(lines))
    providers = tree.get("providers") or {}

    def leaves(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from leaves(value, (*path, str(key)))
        else:
            yield path

    found = set()
    for path in leaves(tree, ()):
        if path[0] == "providers" and len(path) > 2:  # a provider's own keys are named by its type
            path = ("providers", str((providers[path[1]] or {}).get("type") or path[1]), *path[2:])
        found.add(_general(path))
    return found


def _readme_keys() -> set[str]:
    """The settings the README names as ``section.key``."""
    sections = set(Settings.model_fields)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = {match.group(1) for match in _README_KEY.finditer(text)}
    removed = {".".join(key) for key in REMOVED_KEYS}  # named to say they are gone
    return {
        _general(tuple(p.split("."))) for p in paths - removed if p.split(".")[0] in sections and "*" not in p
    }


def _general(path: tuple[str, ...]) -> str:
    """``channels.sms.workers`` -> ``channels.<channel>.workers``, and so on for campaigns and providers."""
    parts = [p if not (p.startswith("<") and p.endswith(">")) else "*" for p in path]
    head, size = parts[0], len(parts)
    if head == "channels" and size > 1:
        parts[1] = "<channel>"
    elif head == "campaigns" and size > 2:
        parts[1:3] = ["<campaign>", "<channel>"]
    elif head == "providers" and size > 2 and (parts[2] in _PROVIDER_KEYS or parts[1] == "*"):
        parts[1] = "<name>"
    elif head == "compliance" and size > 2 and parts[1] in ("quiet_hours", "campaigns"):
        parts[2] = "<channel>" if parts[1] == "quiet_hours" else "<campaign>"
        if size > 4 and parts[3] == "quiet_hours":
            parts[4] = "<channel>"
    return ".".join(parts)


def _covered(key: str) -> bool:
    """A key is covered by itself or a key it is inside; ``providers.<name>.X`` by any provider's X."""
    parts = key.split(".")
    if any(".".join(parts[:n]) in COVERAGE for n in range(1, len(parts) + 1)):
        return True
    return parts[:2] == ["providers", "<name>"] and any(
        k.split(".")[0] == "providers" and k.split(".")[2:] == parts[2:] for k in COVERAGE
    )


def test_every_documented_key_has_a_test() -> None:
    example = _example_keys()
    documented = example | _readme_keys()
    assert {"batch.max_seconds", "worker.shutdown_grace_s", "webhooks.flush_ms"} <= documented
    assert not example & {".".join(key) for key in REMOVED_KEYS}
    assert sorted(key for key in documented if not _covered(key)) == []
    missing = []
    for key, tests in COVERAGE.items():
        assert tests, key
        for test in tests:
            path, _, name = test.partition("::")
            source = (ROOT / "tests" / path).read_text(encoding="utf-8")
            if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
                missing.append(f"{key}: {test}")
    assert missing == []


# --- helpers --------------------------------------------------------------------------------------


def _with(settings: Settings, **sections: Any) -> Settings:
    """The test's settings with some sections' keys replaced (a non-mapping value replaces the key)."""
    data = settings.model_dump(mode="json", by_alias=True)
    for section, values in sections.items():
        current = data.get(section)
        data[section] = {**current, **values} if isinstance(values, dict) and current else values
    return Settings.model_validate(data)


def _logged(settings: Settings, **sections: Any) -> Settings:
    """Settings sending every channel through the log provider (recorded as sent, no request)."""
    log = {"provider": "log"}
    return _with(settings, channels={"sms": log, "whatsapp": log, "email": log}, **sections)


def _queue(settings: Settings, client: redis.Redis, path: Path, rows: list[str], campaign: str = "c") -> None:
    """Record and queue the leads of a CSV (``rows`` after the header line) as ingest does."""
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with open_postgres(settings.database.url or "", settings) as conn:
        report = Ingestor(settings.namespace, conn, client, 1000).ingest(
            [str(path)], ParseOptions(campaign=campaign), {}
        )
    assert report.accepted == len(rows) - 1, report


def _work(settings: Settings, channel: str = "sms", **options: Any) -> WorkerReport:
    """One worker process's loop, in this process, until its queue is drained."""
    endpoints = Endpoints(settings.redis.url or "", settings.database.url or "")
    worker = WorkerOptions(channel, f"test:{uuid.uuid4().hex[:6]}", burst=True, **options)
    return asyncio.run(run_worker(settings, endpoints, worker, asyncio.Event()))


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "leadctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def _unanswered_port() -> Iterator[int]:
    """A port where a TCP connect neither completes nor fails: its listener never accepts, and the one
    connection its accept queue holds (``listen(0)``) is taken, so the kernel drops every SYN after."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            yield port


def _contacts_by_status(pg: psycopg.Connection, namespace: str) -> dict[str, str]:
    rows = pg.execute(
        f'SELECT l.contact, d.status FROM "{namespace}".lead_deliveries d '
        f'JOIN "{namespace}".leads l ON l.id = d.lead_id'
    ).fetchall()
    return dict(rows)


# --- connections ----------------------------------------------------------------------------------


def test_redis_max_connections_and_socket_timeout(settings: Settings) -> None:
    tight = _with(settings, redis={"max_connections": 1, "socket_timeout_ms": 200})
    client = open_redis(tight.redis.url or "", tight)
    try:
        held = client.connection_pool.get_connection()
        with pytest.raises(redis.ConnectionError, match="Too many connections"):
            client.ping()
        client.connection_pool.release(held)
        with pytest.raises(redis.TimeoutError):  # the server would answer in 3 s; the client waits 0.2
            client.blpop([f"{settings.namespace}:nothing"], timeout=3)
    finally:
        client.close()


def test_statement_timeout_and_pgbouncer_mode(settings: Settings) -> None:
    url = settings.database.url or ""
    timed = _with(settings, database={"statement_timeout_ms": 150})
    with open_postgres(url, timed) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("150ms",)
        assert conn.prepare_threshold is not None
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")

    async def in_a_worker_pool() -> str:
        pool = await open_async_pool(url, timed, max_size=1)
        try:
            async with pool.connection() as conn:
                row = await (await conn.execute("SHOW statement_timeout")).fetchone()
                return row[0]
        finally:
            await pool.close()

    assert asyncio.run(in_a_worker_pool()) == "150ms"
    bounced = _with(settings, database={"statement_timeout_ms": 150, "pgbouncer": True})
    with open_postgres(url, bounced) as conn:
        # no session state behind PgBouncer: the role's timeout applies, and nothing is prepared
        (setting, default) = conn.execute(
            "SELECT setting, reset_val FROM pg_settings WHERE name = 'statement_timeout'"
        ).fetchone()
        assert setting == default
        assert conn.prepare_threshold is None


def test_connect_timeouts_give_up_on_a_server_that_never_answers(settings: Settings) -> None:
    """Both defaults are 5 s: each timeout set shorter gives up well before."""
    with _unanswered_port() as port:
        quick = _with(settings, database={"connect_timeout_ms": 2000})  # libpq's least: 2 s
        started = time.monotonic()
        with pytest.raises(DependencyError, match="PostgreSQL unreachable"):
            open_postgres(f"postgresql://postgres@127.0.0.1:{port}/test", quick)
        assert time.monotonic() - started < 4

        twilio = provider_settings(
            "twilio",
            base_url=f"http://127.0.0.1:{port}",
            account_sid=SANDBOX_ACCOUNT_SID,
            auth_token=SANDBOX_AUTH_TOKEN,
            connect_timeout_ms=200,
            **{"from": "+15005550006"},
        )
        started = time.monotonic()
        assert failure(twilio, message("+5511987654321", "sms")).kind == "transient"
        assert time.monotonic() - started < 3


def test_pool_size_caps_the_connections_of_each_worker() -> None:
    settings = Settings.model_validate({"database": {"pool_size": 1, "worker_pool_size": 4}})
    plan = make_plan(settings, 100_000, {"sms": 0.5, "email": 0.5}, assumptions(None))
    assert plan.workers > 1 and plan.postgres["connections"] == plan.workers


# --- ingest ---------------------------------------------------------------------------------------


def test_ingest_reads_default_region_columns_and_batch_size(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    numbers = [f"91{i:07d}" for i in range(3000)]  # Portuguese mobiles, written without +351
    leads = tmp_path / "leads.csv"
    leads.write_text("\n".join(["celular_principal,nome", *(f"{n},Lead {n}" for n in numbers)]) + "\n")
    config = tmp_path / "leadctl.yaml"
    config.write_text("ingest:\n  batch_size: 1000\n  columns:\n    celular_principal: phone\n")
    report = ingest_ok(config, leads, {**leadctl_env, "LEADCTL_DEFAULT_REGION": "PT"})
    assert report["accepted"] == 3000  # the column is the phone, and the numbers are Portugal's
    contacts = [c for (c,) in pg.execute(f'SELECT contact FROM "{settings.namespace}".leads')]
    assert sorted(contacts) == [f"+351{n}" for n in numbers]
    # the rows one transaction wrote share its xmin: batches of 1000 (20,000 by default, which
    # would be one batch here), each split between the two writers
    per_transaction = [
        n for (n,) in pg.execute(f'SELECT count(*) FROM "{settings.namespace}".leads GROUP BY xmin::text')
    ]
    assert max(per_transaction) <= 1000 and len(per_transaction) >= 3


# --- workers --------------------------------------------------------------------------------------


def _worker_processes(run: subprocess.Popen[str], client: redis.Redis, namespace: str) -> int:
    """How many workers a supervisor runs, once each process it spawned has published its heartbeat
    (all are spawned before the first one is ready to)."""

    def settled() -> int | None:
        assert run.poll() is None, run.communicate()[1]
        spawned = [c for c in psutil.Process(run.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        beating = [b for b in live_workers(client, namespace) if f":{run.pid}:" in b.consumer]
        return len(spawned) if spawned and len(beating) == len(spawned) else None

    return wait_for(settled, 60, what="every worker's heartbeat")


def test_channel_workers_are_the_processes_of_work_and_batch(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    write_leads(tmp_path / "leads.csv", 1)  # a lead whose send hangs keeps the batch running
    env = {
        **leadctl_env,
        "LEADCTL_CHANNELS__SMS__WORKERS": "2",
        "LEADCTL_WORKER__SHUTDOWN_GRACE_S": "0.1",
    }
    with sandbox_in_thread(timeout_rate=1.0, hang_s=60) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url, "    read_timeout_ms: 60000\n")
        ingest_ok(config, tmp_path / "leads.csv", env)
        for command in (["batch", "--channel", "sms"], ["work", "--channel", "sms"]):
            run = _start(["--config", str(config), *command], env)
            try:
                assert _worker_processes(run, redis_client, settings.namespace) == 2, command
                run.send_signal(signal.SIGTERM)
                run.communicate(timeout=30)
            finally:
                run.kill()


def test_channel_concurrency_and_the_shutdown_grace(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    """3 sends in flight (and 6 claimed ahead) when every request hangs; after SIGTERM they get
    0.2 s, then are recorded in doubt (the default grace, 30 s, would outlast the test)."""
    write_leads(tmp_path / "leads.csv", 10)
    env = {
        **leadctl_env,
        "LEADCTL_CHANNELS__SMS__CONCURRENCY": "3",
        "LEADCTL_WORKER__SHUTDOWN_GRACE_S": "0.2",
    }
    namespace = settings.namespace

    def claimed() -> int:
        (count,) = pg.execute(
            f"SELECT count(*) FROM \"{namespace}\".deliveries WHERE status = 'sending'"
        ).fetchone()
        return count

    with sandbox_in_thread(timeout_rate=1.0, hang_s=60) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url, "    read_timeout_ms: 60000\n")
        ingest_ok(config, tmp_path / "leads.csv", env)
        run = _start(["--config", str(config), "work", "--channel", "sms", "--workers", "1"], env)
        try:
            wait_for(
                lambda: sandbox.stats()["requests"] == 3 and claimed() == 6, 30, what="3 sends in flight"
            )
            run.send_signal(signal.SIGTERM)
            _, stderr = run.communicate(timeout=20)
        finally:
            run.kill()
        assert sandbox.stats()["requests"] == 3
    assert "Traceback" not in stderr
    assert statuses(pg, namespace) == {"in_doubt": 3, "queued": 7}


def test_batch_max_seconds_is_the_runs_time_budget(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_leads(tmp_path / "leads.csv", 500)  # at most 5 in flight for 50 ms each: 5 s for all
    env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__CONCURRENCY": "5"}
    with sandbox_in_thread(latency_ms=50, seed=4) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url, "batch:\n  max_seconds: 2\n")
        ingest_ok(config, tmp_path / "leads.csv", env)
        result = run_leadctl(["--config", str(config), "batch", "--workers", "1", "--json"], env, timeout=60)
    assert result.returncode == 0, result.stderr
    sms = json.loads(result.stdout)["channels"]["sms"]
    assert sms["remaining"] > 0 and sms["sent"] + sms["remaining"] == 500
    assert statuses(pg, settings.namespace) == Counter(sent=sms["sent"], queued=sms["remaining"])


def test_worker_batch_size_is_how_many_entries_a_read_takes(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, pg: psycopg.Connection
) -> None:
    small = _logged(settings, worker={"batch_size": 4})
    _queue(
        small, redis_client, tmp_path / "leads.csv", ["telefone", *(f"+55119876{i:05d}" for i in range(20))]
    )
    assert _work(small).statuses == {"sent": 20}  # 50 in flight: the reads alone are small
    # the leads of one read are claimed in one statement: they share its claimed_at
    per_claim = [
        n
        for (n,) in pg.execute(f'SELECT count(*) FROM "{settings.namespace}".deliveries GROUP BY claimed_at')
    ]
    assert max(per_claim) == 4 and sum(per_claim) == 20


def test_visibility_timeout_is_when_a_dead_workers_entries_come_back(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    quick = _logged(settings, worker={"visibility_timeout_s": 0.5})
    _queue(quick, redis_client, tmp_path / "leads.csv", ["telefone", "+5511987650001", "+5511987650002"])
    stream = keys.stream(settings.namespace, "sms")
    assert redis_client.xreadgroup(keys.GROUP, "gone:1:sms:0", {stream: ">"}, count=10)  # and died
    endpoints = Endpoints(settings.redis.url or "", settings.database.url or "")
    options = WorkerOptions("sms", "test:reclaimer", burst=True)
    # with the default 30 s the entries would still be another consumer's when the 10 s are up
    report = asyncio.run(asyncio.wait_for(run_worker(quick, endpoints, options, asyncio.Event()), 10))
    assert report.statuses == {"sent": 2}


def test_block_ms_is_how_long_a_read_waits_for_new_entries(settings: Settings) -> None:
    patient = _logged(settings, worker={"block_ms": 1500})  # the default is 1000
    open_postgres(patient.database.url or "", patient).close()  # the schema, as ingest would make it
    started = time.monotonic()
    assert _work(patient).statuses == {}  # an empty queue: one read, which waits its time out
    assert time.monotonic() - started >= 1.5


def test_metrics_false_publishes_no_counters(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, pg: psycopg.Connection
) -> None:
    silent = _logged(settings, worker={"metrics": False})
    _queue(silent, redis_client, tmp_path / "a.csv", ["telefone", "+5511987650001", "+5511987650002"])
    _work(silent)
    sms = collect(redis_client, pg, silent).channels["sms"]
    assert (sms["sent"], sms["sent_last_minute"]) == (2, 0)  # PostgreSQL knows; no counter does
    counted = _logged(settings, worker={"metrics": True})
    _queue(counted, redis_client, tmp_path / "b.csv", ["telefone", "+5511987650003"])
    _work(counted)
    sms = collect(redis_client, pg, counted).channels["sms"]
    assert (sms["sent"], sms["sent_last_minute"]) == (3, 1)


# --- compliance -----------------------------------------------------------------------------------

SUNDAY = datetime(2024, 6, 9, 11, 30, tzinfo=UTC)
"""08:30 on a Sunday in São Paulo, 20:30 in Tokyo."""


def test_send_windows_time_zones_and_campaign_windows(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, pg: psycopg.Connection
) -> None:
    """Every value differs from its default (09:00-20:00, mon-sat, the ``timezone`` field, São Paulo),
    so a key ignored sends a lead that should wait, or the other way round."""
    window = {"allow": "08:00-10:00", "days": "sun"}
    configured = _logged(
        settings,
        compliance={
            "quiet_hours": {"sms": window, "email": window},
            "timezone_field": "fuso",
            "default_timezone": "Asia/Tokyo",
            "campaigns": {"night": {"quiet_hours": {"sms": {"allow": "20:00-21:00", "days": "sun"}}}},
        },
    )
    day = [
        "nome,telefone,email,fuso",
        "Sampa,+5511987650001,,",
        "Toquio,+5511987650002,,Asia/Tokyo",
        "Ana,,ana@example.com,",
    ]
    _queue(configured, redis_client, tmp_path / "day.csv", day, campaign="day")
    night = ["nome,telefone,fuso", "Noite,+5511987650003,Asia/Tokyo"]
    _queue(configured, redis_client, tmp_path / "night.csv", night, campaign="night")

    assert _work(configured, "sms", clock=SUNDAY.timestamp).statuses == {"sent": 2, "deferred": 1}
    assert _work(configured, "email", clock=SUNDAY.timestamp).statuses == {"deferred": 1}
    assert _contacts_by_status(pg, settings.namespace) == {
        "+5511987650001": "sent",  # 08:30 in São Paulo, its phone's zone: inside 08:00-10:00 on Sunday
        "+5511987650002": "queued",  # its fuso says Tokyo: 20:30
        "+5511987650003": "sent",  # Tokyo too, but its campaign's window is 20:00-21:00
        "ana@example.com": "queued",  # no phone, no fuso: the default zone, Tokyo
    }


def test_cap_action_skip_suppresses_instead_of_deferring(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, pg: psycopg.Connection
) -> None:
    other = f"t_{uuid.uuid4().hex[:12]}"  # namespaces sharing a caps scope reach the same person
    caps = {"caps": {"sms": "1/day"}, "caps_scope": settings.namespace, "cap_action": "skip"}
    try:
        reports = []
        for n, namespace in enumerate((settings.namespace, other)):
            configured = _logged(settings, namespace=namespace, compliance=caps)
            _queue(configured, redis_client, tmp_path / f"{n}.csv", ["telefone", "+5511987650001"])
            reports.append(_work(configured).statuses)
        assert reports == [{"sent": 1}, {"capped": 1}]
        assert _contacts_by_status(pg, other) == {"+5511987650001": "suppressed"}  # not queued, deferred
    finally:
        purge_namespace(redis_client, settings.database.url or "", other)


# --- stats ----------------------------------------------------------------------------------------


def test_alert_thresholds_and_the_currency_are_the_configs(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, pg: psycopg.Connection
) -> None:
    """4 leads went dead on their only attempt (an error rate of 1.0), 3 wait; 100 s later, each
    threshold decides alone whether its alert fires."""
    with sandbox_in_thread(error_rate=1.0) as down:
        configured = _with(
            settings,
            channels={"sms": {"provider": "twilio", "max_attempts": 1}},
            providers={
                "twilio": {
                    "base_url": down.base_url,
                    "account_sid": SANDBOX_ACCOUNT_SID,
                    "auth_token": SANDBOX_AUTH_TOKEN,
                    "from": "+15005550006",
                    "price": 0.05,
                    "currency": "BRL",
                }
            },
        )
        _queue(
            configured,
            redis_client,
            tmp_path / "a.csv",
            ["telefone", *(f"+551198765000{i}" for i in range(4))],
        )
        assert _work(configured).statuses == {"dead": 4}
    _queue(
        configured, redis_client, tmp_path / "b.csv", ["telefone", *(f"+551198765100{i}" for i in range(3))]
    )
    later = time.time() + 100

    def alerts(**thresholds: float) -> set[str]:
        snapshot = collect(redis_client, pg, _with(configured, alerts=thresholds), now=later)
        assert snapshot.cost["currency"] == "BRL"
        return {alert.name for alert in snapshot.alerts if alert.channel == "sms"}

    low = {"queue_size": 2, "error_rate": 0.5, "stalled_s": 50, "dead_letters": 3}
    assert alerts(**low) == {"queue_size", "error_rate", "stalled", "dead_letters"}
    high = {"queue_size": 3, "error_rate": 1.0, "stalled_s": 1000, "dead_letters": 4}
    for name, value in high.items():
        assert alerts(**{**low, name: value}) == alerts(**low) - {"stalled" if name == "stalled_s" else name}


# --- webhooks -------------------------------------------------------------------------------------

ZENVIA = {"zenvia": {"api_token": "t", "from": "acme", "webhook_token": "s3cret"}}


def _zenvia_reply(url: str, contact: str, text: str, header: str = "X-Custom-Token") -> int:
    inbound = {
        "id": uuid.uuid4().hex,
        "from": contact,
        "direction": "IN",
        "contents": [{"type": "text", "text": text}],
    }
    body = {
        "type": "MESSAGE",
        "channel": "sms",
        "direction": "IN",
        "timestamp": "2024-06-03T12:01:00Z",
        "message": inbound,
    }
    headers = {"Content-Type": "application/json", header: "s3cret"}
    return kit.post(url + "/webhooks/zenvia", json.dumps(body).encode(), headers)[0]


@contextlib.contextmanager
def _webhooks(settings: Settings) -> Iterator[str]:
    open_postgres(settings.database.url or "", settings).close()
    with serve_in_thread(
        settings, Endpoints(settings.redis.url or "", settings.database.url or "")
    ) as running:
        yield running.url


def test_optout_keywords_and_the_zenvia_webhook_header(
    settings: Settings, pg: psycopg.Connection, namespace: str
) -> None:
    zenvia = {"zenvia": {**ZENVIA["zenvia"], "webhook_header": "X-Custom-Token"}}
    with _webhooks(_with(settings, providers=zenvia, optout={"keywords": ["CHEGA"]})) as url:
        assert _zenvia_reply(url, "5511999990001", "Chega!", header="X-Webhook-Token") == 403
        assert _zenvia_reply(url, "5511999990001", "Chega!") == 200
        assert _zenvia_reply(url, "5511999990002", "STOP") == 200  # a default keyword, not configured
    suppressed = pg.execute(f'SELECT contact, channel FROM "{namespace}".suppressions').fetchall()
    assert suppressed == [("+5511999990001", "sms")]


def test_webhook_events_are_written_every_flush_ms_or_batch_size(settings: Settings) -> None:
    """An opt-out is answered once it is written: at once when it fills a batch (of 1), though the
    writer would wait a minute for more; else after flush_ms (1.5 s; the default is 0.1)."""
    one_by_one = _with(settings, providers=ZENVIA, webhooks={"flush_ms": 60_000, "batch_size": 1})
    with _webhooks(one_by_one) as url:
        assert _zenvia_reply(url, "5511999990001", "SAIR", header="X-Webhook-Token") == 200
    by_time = _with(settings, providers=ZENVIA, webhooks={"flush_ms": 1500, "batch_size": 1000})
    with _webhooks(by_time) as url:
        started = time.monotonic()
        assert _zenvia_reply(url, "5511999990002", "SAIR", header="X-Webhook-Token") == 200
        assert time.monotonic() - started >= 1.5


def test_webhooks_serve_listens_on_the_configured_host_and_port(
    leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "leadctl.yaml"
    config.write_text(f"webhooks:\n  host: 127.0.0.2\n  port: {port}\n")  # not the default 127.0.0.1:8088
    run = _start(["--config", str(config), "webhooks", "serve"], leadctl_env)
    try:

        def answers() -> bool:
            try:
                return kit.get(f"http://127.0.0.2:{port}/healthz")[0] == 200
            except OSError:
                assert run.poll() is None, run.communicate()[1]
                return False

        wait_for(answers, 30, what="the webhook server")
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
        assert run.returncode == 0, stderr
    finally:
        run.kill()


# --- providers ------------------------------------------------------------------------------------


def test_rate_limit_per_sender_spaces_each_senders_sends(settings: Settings) -> None:
    async def four_sends() -> float:
        client = aioredis.Redis.from_url(settings.redis.url or "")
        try:
            limiter = throttle_for(
                client, settings.namespace, "twilio", ProviderSettings(rate_limit_per_sender=10, burst=1)
            )
            started = time.monotonic()
            for _ in range(4):
                await limiter.acquire(sender="+15005550006")
            return time.monotonic() - started
        finally:
            await client.aclose()

    assert asyncio.run(four_sends()) >= 0.25  # 10/s from one sender: 0.1 s between sends
