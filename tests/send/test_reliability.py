"""Real processes, real failures: SIGKILL mid-run, SIGTERM drains, overlapping and time-boxed batches."""

from __future__ import annotations

import json
import signal
import socket
from collections import Counter
from pathlib import Path

import psutil
import psycopg
import redis

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.queue import keys
from tests.support.cli import ingest_ok, run_leadctl, start_leadctl, worker_pids
from tests.support.files import sandbox_config, write_leads
from tests.support.state import assert_sent_at_most_once, statuses
from tests.support.waiting import wait_for


def test_sigkilled_worker_loses_nothing_and_sends_nothing_twice(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    phones = write_leads(tmp_path / "leads.csv", 1500)
    with sandbox_in_thread(latency_ms=20, seed=1) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        run = start_leadctl(
            [
                "--config",
                str(config),
                "work",
                "--channel",
                "sms",
                "--workers",
                "2",
                "--concurrency",
                "20",
                "--burst",
            ],
            leadctl_env,
        )
        wait_for(lambda: sandbox.stats()["accepted"] >= 200 and len(worker_pids(run)) == 2)
        victim = worker_pids(run)[0]
        psutil.Process(victim).kill()
        _, stderr = run.communicate(timeout=120)
        messages = sandbox.messages()

    assert "restarting" in stderr
    # every lead recorded sent reached the provider; the others reached it at most once, and are in doubt
    assert_sent_at_most_once(pg, settings.namespace, messages)
    final = statuses(pg, settings.namespace)
    assert final["sent"] + final["in_doubt"] == len(phones)
    stream = keys.stream(settings.namespace, "sms")
    assert redis_client.xlen(stream) == 0 and redis_client.xpending(stream, keys.GROUP)["pending"] == 0


def test_sigterm_drains_in_flight_sends_and_exits_zero(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_leads(tmp_path / "leads.csv", 3000)
    with sandbox_in_thread(latency_ms=30, seed=2) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        run = start_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--concurrency", "10"],
            leadctl_env,
        )
        wait_for(lambda: sandbox.stats()["accepted"] >= 100)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr
        partial = statuses(pg, settings.namespace)
        assert partial["sending"] == 0 and partial["in_doubt"] == 0
        assert partial["sent"] == sandbox.stats()["accepted"] < 3000
        # what was left (queued, or read and released) is sent by the next run, once
        again = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--burst"],
            leadctl_env,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert sandbox.stats()["accepted"] == 3000 and sandbox.stats()["duplicates"] == 0
    assert statuses(pg, settings.namespace) == Counter({"sent": 3000})


def test_overlapping_batches_process_each_lead_once(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_leads(tmp_path / "leads.csv", 600)
    # 5 sends in flight at 100 ms each: the first run takes ~12 s, long enough to overlap for sure
    leadctl_env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__CONCURRENCY": "5"}
    with sandbox_in_thread(latency_ms=100, seed=3) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        first = start_leadctl(["--config", str(config), "batch", "--workers", "1", "--json"], leadctl_env)
        wait_for(lambda: sandbox.stats()["accepted"] >= 20)
        second = run_leadctl(["--config", str(config), "batch", "--workers", "1", "--json"], leadctl_env)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["skipped"] is True
        assert "another leadctl batch is running" in second.stderr
        assert first.poll() is None  # the second skipped at once: it did not wait for the first to end
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        summary = json.loads(out)
        assert summary["skipped"] is False
        assert summary["channels"]["sms"]["sent"] == 600 and summary["channels"]["sms"]["remaining"] == 0
        assert sandbox.stats()["accepted"] == 600 and sandbox.stats()["duplicates"] == 0
    assert statuses(pg, settings.namespace) == Counter({"sent": 600})


def test_time_budget_stops_a_batch_and_leaves_the_rest_queued(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_leads(tmp_path / "leads.csv", 2000)
    # 5 sends in flight at 50 ms each: at most 100 a second, so 8 s never send all 2,000, and are
    # ample for a worker to start and send some, on a loaded machine too
    with sandbox_in_thread(latency_ms=50, seed=4) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__CONCURRENCY": "5"}
        result = run_leadctl(
            ["--config", str(config), "batch", "--workers", "1", "--max-seconds", "8", "--json"],
            env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        sms = json.loads(result.stdout)["channels"]["sms"]
        accepted = sandbox.stats()["accepted"]
    assert 0 < sms["sent"] == accepted < 2000
    assert sms["remaining"] == 2000 - accepted
    final = statuses(pg, settings.namespace)
    assert final == Counter({"sent": accepted, "queued": 2000 - accepted})


def test_live_workers_are_listed_from_their_heartbeats(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    write_leads(tmp_path / "leads.csv", 500)
    with sandbox_in_thread(latency_ms=100, seed=6) as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        env = {**leadctl_env, "LEADCTL_CHANNELS__SMS__CONCURRENCY": "5"}
        run = start_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--name", "h1"], env
        )
        try:

            def listed() -> list[dict[str, object]]:
                result = run_leadctl(["workers", "--json"], leadctl_env)
                assert result.returncode == 0, result.stderr
                return json.loads(result.stdout)["workers"]

            wait_for(lambda: len(listed()) == 2, timeout=30, every=0.5)
            workers = listed()
            assert {w["host"] for w in workers} == {socket.gethostname()}
            assert {w["channel"] for w in workers} == {"sms"}
            assert all(w["consumer"].startswith("h1:") for w in workers)
        finally:
            run.send_signal(signal.SIGTERM)
            run.communicate(timeout=60)
        assert listed() == []  # clean exits retire their heartbeats


def test_poison_entries_go_to_dead_letters_without_stalling_the_worker(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    rows = [{"name": f"Lead {i}", "phone": f"+55119876500{i:02d}", "cidade": "Recife"} for i in range(10)]
    rows.append({"name": "Sem Cidade", "phone": "+5511987650099"})
    (tmp_path / "leads.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    stream, dead = keys.stream(settings.namespace, "sms"), keys.dead_letters(settings.namespace, "sms")
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        config.write_text(config.read_text().replace("'Oi {{ name }}!'", "'Oi {{ name }} de {{ cidade }}!'"))
        ingest = ["--config", str(config), "ingest", str(tmp_path / "leads.ndjson"), "--channel", "sms"]
        assert run_leadctl(ingest, leadctl_env).returncode == 0
        redis_client.xadd(stream, {b"x": b"no lead field"})
        redis_client.xadd(stream, {b"l": b"not-a-number"})
        redis_client.xadd(stream, {b"l": b"987654321"})
        result = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"], leadctl_env
        )
        assert sandbox.stats()["accepted"] == 10
    assert result.returncode == 1, result.stderr  # some leads were not sent
    assert "Traceback" not in result.stderr
    reasons = sorted(fields[b"reason"].decode() for _, fields in redis_client.xrange(dead))
    assert len(reasons) == 4
    assert "'cidade'" in reasons[0]
    assert reasons[1:] == ["undecodable entry", "undecodable entry", "unknown lead"]
    assert statuses(pg, settings.namespace) == Counter({"sent": 10, "dead": 1})
    assert redis_client.xlen(stream) == 0 and redis_client.xpending(stream, keys.GROUP)["pending"] == 0
