"""`leadctl stats --json` after a real run with faults, checked against PostgreSQL and the sandbox."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.ops.stats import STATUSES
from leadctl.queue import keys
from leadctl.send.metrics import LATENCY_BOUNDS_MS, OUTCOMES, latency_bucket, quantile
from leadctl.store.migrations import migrate
from tests.support.cli import leadctl_ok, stats_json
from tests.support.files import stats_config, write_leads

RATE_KEYS = (
    "retried",
    "sent_last_minute",
    "leads_per_min_1m",
    "leads_per_min_5m",
    "leads_per_min_15m",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "spend",
)
CHANNEL_KEYS = ("leads", *STATUSES, "oldest_pending_s", *RATE_KEYS, "workers", "suppression_list")


def _pg_counts(pg: psycopg.Connection, namespace: str, by: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(group, status) -> (leads, retried) for ``by`` = channel, campaign or provider."""
    rows = pg.execute(
        f"SELECT {by}, status, count(*), coalesce(sum(greatest(attempts - 1, 0)), 0)::int "
        f'FROM "{namespace}".lead_deliveries GROUP BY 1, 2'
    ).fetchall()
    return {(group, status): (count, retried) for group, status, count, retried in rows}


def _check_group(figures: dict, pg: dict[tuple[str, str], tuple[int, int]], group: str) -> None:
    """A group's statuses, retries and per-minute rates against PostgreSQL (all sent in the last minute)."""
    leads = {status: pg.get((group, status), (0, 0))[0] for status in (*STATUSES, "sending")}
    assert leads["sending"] == 0
    for status in STATUSES:
        assert figures[status] == leads[status], status
    assert figures["leads"] == sum(leads.values()) == sum(figures[s] for s in STATUSES)
    assert figures["retried"] == sum(retried for (g, _), (_, retried) in pg.items() if g == group)
    assert figures["sent_last_minute"] == leads["sent"]
    finished = sum(leads[s] for s in OUTCOMES)
    assert figures["leads_per_min_1m"] == finished
    assert figures["leads_per_min_5m"] == round(finished / 5, 1)
    assert figures["leads_per_min_15m"] == round(finished / 15, 1)
    assert figures["spend"]["today"] == figures["spend"]["month"] == pytest.approx(leads["sent"] * 0.01)
    assert figures["spend"]["projected_month"] == pytest.approx(leads["sent"] / 15 * 43_200 * 0.01)


def test_every_figure_matches_postgresql_and_the_sandbox(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    namespace = settings.namespace
    alpha = write_leads(tmp_path / "alpha.csv", 150)
    write_leads(tmp_path / "beta.csv", 98, start=1000, extra_phones=("+15005550001", "+15005550002"))
    migrate(pg, namespace)
    pg.execute(
        f'INSERT INTO "{namespace}".suppressions (contact, channel) '
        "SELECT unnest(%s::text[]), 'sms' UNION ALL SELECT '+5511999999999', '*'",
        (alpha[:3],),
    )
    with sandbox_in_thread(error_rate=0.2, timeout_rate=0.03, hang_s=1, latency_ms=5, seed=7) as sandbox:
        config = stats_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        for name in ("alpha", "beta"):
            leadctl_ok(
                ["--config", str(config), "ingest", str(tmp_path / f"{name}.csv"), "--campaign", name],
                leadctl_env,
            )
        leadctl_ok(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--burst"],
            leadctl_env,
            codes=(1,),  # some leads failed, by design
        )
        figures = stats_json(config, leadctl_env)
        seen = sandbox.stats()

    assert set(figures) >= {"channels", "campaigns", "providers", "workers", "alerts", "cost"}
    sms = figures["channels"]["sms"]
    assert set(CHANNEL_KEYS) <= set(sms)
    _check_group(sms, _pg_counts(pg, namespace, "channel"), "sms")
    assert sms["leads"] == 250
    assert sms["suppressed"] == 3 and sms["suppression_list"] == 4
    assert sms["queued"] == sms["pending"] == sms["oldest_pending_s"] == sms["stalled_s"] == 0

    # the sandbox's own record: every call it answered, every message it accepted
    assert sms["sent"] == seen["accepted"] - seen["hung"]
    assert sms["in_doubt"] == seen["hung"]
    assert sms["failed"] == seen["rejected"] == 2
    attempted = sum(sms[s] for s in OUTCOMES)
    assert sms["retried"] == seen["requests"] - attempted
    failed_calls = seen["errors"] + seen["rejected"] + seen["hung"]
    assert sms["error_rate"] == round(failed_calls / seen["requests"], 4)
    assert sms["dead"] == redis_client.xlen(keys.dead_letters(namespace, "sms")) == sms["dead_letters"]
    assert 0 < sms["latency_p50_ms"] <= sms["latency_p95_ms"] <= sms["latency_p99_ms"]
    assert sms["latency_p50_ms"] < 300  # most calls answer in milliseconds; timeouts are cut at 300 ms

    for channel in ("whatsapp", "email"):
        quiet = figures["channels"][channel]
        assert quiet["leads"] == quiet["sent"] == quiet["leads_per_min_1m"] == 0
        assert quiet["latency_p50_ms"] is None

    campaigns = _pg_counts(pg, namespace, "campaign")
    assert set(figures["campaigns"]) == {"alpha", "beta"}
    for name, group in figures["campaigns"].items():
        _check_group(group, campaigns, name)
    assert figures["campaigns"]["beta"]["failed"] == 2

    providers = _pg_counts(pg, namespace, "provider")
    twilio = figures["providers"]["twilio"]
    for status in ("sent", "failed", "dead", "in_doubt"):
        assert twilio[status] == providers.get(("twilio", status), (0, 0))[0]
    assert twilio["retried"] == sms["retried"] and twilio["error_rate"] == sms["error_rate"]

    assert figures["cost"]["currency"] == "USD"
    assert figures["cost"]["sms"] == sms["spend"]
    assert figures["cost"]["total"]["month"] == pytest.approx(sms["sent"] * 0.01)
    assert figures["workers"] == []  # they retired when the burst ended

    active = {(a["name"], a["channel"]): a for a in figures["alerts"]}
    error_rate = active[("error_rate", "sms")]
    assert error_rate["value"] == sms["error_rate"] and error_rate["threshold"] == 0.05
    assert error_rate["since"].endswith("Z")
    if sms["dead"]:
        assert active[("dead_letters", "sms")]["value"] == sms["dead"]
    assert ("queue_size", "sms") not in active and ("stalled", "sms") not in active


def test_statuses_add_up_while_leads_are_read_claimed_and_waiting(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    namespace = settings.namespace
    write_leads(tmp_path / "leads.csv", 60)
    config = stats_config(tmp_path / "leadctl.yaml", "http://127.0.0.1:9", "alerts:\n  queue_size: 50\n")
    ingest = ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--campaign", "c"]
    leadctl_ok(ingest, leadctl_env)
    # a worker read 10 entries, claimed 4 of them in PostgreSQL and died before sending
    stream = keys.stream(namespace, "sms")
    read = redis_client.xreadgroup(keys.GROUP, "gone:1:0", {stream: ">"}, count=10)[0][1]
    claimed = [int(fields[b"l"]) for _, fields in read[:4]]
    pg.execute(  # as their claim wrote them
        f'INSERT INTO "{namespace}".deliveries (lead_id, channel, campaign, status, attempts, claimed_at) '
        "SELECT id, channel, campaign, 'sending', 1, now() - interval '7 s' "
        f'FROM "{namespace}".leads WHERE id = ANY(%s)',
        (claimed,),
    )

    figures = stats_json(config, leadctl_env)
    sms = figures["channels"]["sms"]
    assert (sms["leads"], sms["queued"], sms["pending"]) == (60, 50, 10)
    assert sum(sms[s] for s in STATUSES) == sms["leads"]
    assert sms["oldest_pending_s"] >= 0
    campaign = figures["campaigns"]["c"]
    assert (campaign["queued"], campaign["pending"]) == (56, 4)  # only claimed leads are known in flight
    assert sum(campaign[s] for s in STATUSES) == campaign["leads"] == 60
    assert campaign["oldest_pending_s"] >= 7
    alert = next(a for a in figures["alerts"] if a["name"] == "queue_size")
    assert (alert["channel"], alert["value"], alert["threshold"]) == ("sms", 60, 50)


def test_latency_percentiles_interpolate_inside_the_fixed_buckets() -> None:
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for ms in range(1, 1001):
        buckets[latency_bucket(ms)] += 1
    assert [quantile(buckets, q) for q in (0.50, 0.95, 0.99)] == [500, 950, 990]
    assert quantile([0] * len(buckets), 0.5) is None
    beyond = [0] * len(buckets)
    beyond[latency_bucket(90_000)] = 3
    assert quantile(beyond, 0.5) == LATENCY_BOUNDS_MS[-1]  # all we know: slower than the last bound
