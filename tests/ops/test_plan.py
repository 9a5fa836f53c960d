"""`leadctl plan`: the capacity model's arithmetic, its inputs (bench result, config, options), the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from leadctl.config import Settings
from leadctl.ops.measured import DispatchBenchResult, load_result, save_result
from leadctl.ops.plan import (
    DEFAULT_PRICES,
    Assumptions,
    assumptions,
    make_plan,
    parse_mix,
    parse_rate,
    phases,
)
from tests.support.cli import run_leadctl

GIVEN = Assumptions(
    core_leads_per_min=30_000,
    measured_by="test",
    latency_ms=200,
    cores_per_host=8,
    hours_per_day=24,
    redis_cpu_us_per_lead=15,
    redis_commands_per_lead=0.2,
    postgres_wal_bytes_per_lead=2_500,
    postgres_bytes_per_lead=650,
    retention_days=90,
)
MIX = {"sms": 0.4, "whatsapp": 0.4, "email": 0.2}


def bench_result(leads_per_min: float = 90_000) -> DispatchBenchResult:
    return DispatchBenchResult(
        leads=100_000,
        workers=2,
        concurrency=100,
        leads_per_min=leads_per_min,
        raw_ceiling_per_min=200_000,
        ratio=leads_per_min / 200_000,
        latency_p50_ms=50,
        latency_p99_ms=200,
        worker_peak_rss_mb=80,
        redis_commands_per_lead=0.1,
        sent=100_000,
        duplicates_at_provider=0,
        cpus=2,
        redis_cpu_us_per_lead=9.0,
        postgres_wal_bytes_per_lead=2_000,
        postgres_bytes_per_lead=600,
    )


def test_rates_and_mixes_are_parsed_or_refused() -> None:
    assert parse_rate("100000/min") == parse_rate("100,000/min") == parse_rate("100k/m") == 100_000
    assert parse_rate("1500/s") == 90_000 and parse_rate("6M/h") == 100_000
    assert parse_mix("sms=40,whatsapp=40,email=20") == pytest.approx(MIX)
    assert parse_mix("email=1") == {"email": 1.0}
    for bad in ("100000", "fast/min", "0/min"):
        with pytest.raises(ValueError, match="--rate"):
            parse_rate(bad)
    for bad in ("fax=10", "sms=ten", "sms=0", "sms=-1,email=2"):
        with pytest.raises(ValueError, match="--channel-mix"):
            parse_mix(bad)


def test_the_model_at_100k_per_minute() -> None:
    plan = make_plan(Settings(), 100_000, MIX, GIVEN)
    sms, whatsapp, email = plan.channels["sms"], plan.channels["whatsapp"], plan.channels["email"]
    # 50 in flight / 0.2 s = 15,000/min per worker: under the 30,000 a core allows, so i/o-bound
    assert (sms.worker_leads_per_min, sms.bound_by) == (15_000, "concurrency / latency")
    assert (sms.workers, whatsapp.workers, email.workers) == (4, 4, 2)  # ceil(40,000 / (15,000 x 0.7))
    assert plan.cores == pytest.approx(100_000 / (30_000 * 0.7))
    assert plan.hosts == 1 and plan.workers == 10
    assert (sms.senders, sms.sender_per_second) == (7, 100.0)  # 667/s over short codes
    assert (whatsapp.senders, whatsapp.sender_per_second) == (9, 80.0)  # Cloud API numbers
    assert email.senders is None
    assert sms.messages_per_month == 40_000 * 60 * 24 * 30
    assert sms.cost_per_month == pytest.approx(sms.messages_per_month * DEFAULT_PRICES["sms"])
    assert plan.redis["masters"] == 1 and not plan.redis["cluster"] and plan.redis["partitions"] == 1
    assert plan.redis["cpu_cores"] == pytest.approx(100_000 / 60 * 15e-6)
    assert plan.postgres["row_writes_per_s"] == pytest.approx(100_000 / 60 * 4)
    assert plan.postgres["connections"] == 10 * 4 and not plan.postgres["pgbouncer"]
    assert plan.cost["total"] == pytest.approx(
        plan.cost["api"]["total"] + plan.cost["infrastructure"]["total"]
    )


def test_cpu_bound_workers_many_hosts_and_a_redis_cluster_when_redis_is_the_limit() -> None:
    slow_redis = replace(GIVEN, redis_cpu_us_per_lead=100.0, latency_ms=20)
    plan = make_plan(Settings(), 1_000_000, MIX, slow_redis)
    assert plan.channels["sms"].bound_by == "cpu"  # 50 / 0.02 s = 150,000/min > 30,000
    assert plan.channels["sms"].workers == math.ceil(400_000 / (30_000 * 0.7))
    assert plan.hosts == math.ceil(1_000_000 / (30_000 * 0.7) / 8)
    assert plan.redis["masters_needed"] == 3 and plan.redis["cluster"]  # 1.67 cores of Redis at 70%
    assert plan.redis["partitions"] == 16
    assert plan.workers == 50 and plan.postgres["connections"] == 200
    io_bound = make_plan(Settings(), 1_000_000, MIX, GIVEN)
    assert io_bound.workers == 98 and io_bound.postgres["pgbouncer"]  # 392 connections


def test_config_sets_sender_limits_prices_and_pool_size() -> None:
    settings = Settings.model_validate(
        {
            "channels": {"sms": {"provider": "twilio"}, "whatsapp": {"provider": "twilio"}},
            "providers": {"twilio": {"rate_limit_per_sender": 10, "price": {"sms": 0.0079}}},
            "database": {"worker_pool_size": 2},
        }
    )
    plan = make_plan(settings, 100_000, MIX, GIVEN, sender_per_second={"whatsapp": 50})
    assert (plan.channels["sms"].senders, plan.channels["sms"].price) == (67, 0.0079)
    assert plan.channels["whatsapp"].sender_per_second == 10  # the config's per-sender limit wins
    assert plan.postgres["connections"] == 10 * 2
    assert any("twilio: 267 requests in flight" in note for note in plan.notes)
    default = make_plan(
        Settings.model_validate({"channels": {"whatsapp": {"provider": "twilio"}}}), 100_000, MIX, GIVEN
    )
    assert default.channels["whatsapp"].sender_per_second == 10  # a Twilio WhatsApp sender


def test_the_design_phases_are_computed() -> None:
    table = phases(Settings(), MIX, GIVEN)
    assert list(table) == ["phase 2", "phase 3", "phase 4", "1M/min"]
    assert table["phase 4"]["workers"] == 10 and table["1M/min"]["hosts"] == 6
    assert table["1M/min"]["api_per_month"] == 10 * table["phase 4"]["api_per_month"]


def test_a_saved_bench_result_is_what_the_plan_assumes(tmp_path) -> None:
    assert load_result(tmp_path) is None
    save_result(bench_result(), tmp_path)
    loaded = load_result(tmp_path)
    assert loaded == bench_result()
    given = assumptions(loaded, latency_ms=100)
    assert given.core_leads_per_min == 45_000  # 90,000/min over 2 workers on 2 CPUs
    assert given.redis_cpu_us_per_lead == 9.0 and "leadctl bench dispatch" in given.measured_by
    assert assumptions(None).measured_by.startswith("the default")


def test_plan_command_json_and_errors(settings: Settings, leadctl_env: dict[str, str]) -> None:
    save_result(bench_result(), settings.data_dir)
    result = run_leadctl(["plan", "--rate", "1000000/min", "--sender-mps", "sms=10", "--json"], leadctl_env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["leads_per_min"] == 1_000_000 and plan["mix"] == pytest.approx(MIX)
    assert plan["assumptions"]["core_leads_per_min"] == 45_000
    assert plan["channels"]["sms"]["senders"] == math.ceil(400_000 / 60 / 10)
    assert set(plan["design_phases"]) == {"phase 2", "phase 3", "phase 4", "1M/min"}
    human = run_leadctl(["plan", "--rate", "100000/min", "--channel-mix", "sms=1"], leadctl_env)
    assert human.returncode == 0 and "leadctl plan: 100,000 leads/min (sms 100%)" in human.stdout
    bad = run_leadctl(["plan", "--rate", "lots"], leadctl_env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --rate takes leads per unit")
