"""The spine end to end over real Redis, PostgreSQL and HTTP: a file in, every lead sent exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psycopg
import redis

from leadctl.config import Settings
from leadctl.local.sandbox.server import SANDBOX_AUTH_TOKEN, SANDBOX_SENDGRID_KEY, sandbox_in_thread
from leadctl.queue import keys
from tests.support.cli import ingest_ok, run_leadctl
from tests.support.files import EXAMPLES, sandbox_config, write_leads


def test_thousand_leads_sent_exactly_once(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    pg: psycopg.Connection,
) -> None:
    phones = write_leads(tmp_path / "leads.csv", 1000)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingested = run_leadctl(
            ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--json"], leadctl_env
        )
        assert ingested.returncode == 0, ingested.stderr
        report = json.loads(ingested.stdout)
        assert report["rows"] == report["accepted"] == 1000
        assert (
            report["rows"]
            == report["accepted"] + report["rejected"] + report["duplicates"] + report["suppressed"]
        )

        worked = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "2", "--burst", "--json"],
            leadctl_env,
        )
        assert worked.returncode == 0, worked.stderr
        assert json.loads(worked.stdout)["statuses"] == {"sent": 1000}
        messages = sandbox.messages()

    received = Counter(m["to"] for m in messages)
    assert set(received) == set(phones)
    assert max(received.values()) == 1
    assert all(m["body"].startswith("Oi Lead ") for m in messages)

    rows = pg.execute(
        f'SELECT status, provider_message_id FROM "{settings.namespace}".deliveries WHERE channel = %s',
        ("sms",),
    ).fetchall()
    assert len(rows) == 1000
    assert {status for status, _ in rows} == {"sent"}
    assert all(mid and mid.startswith("SM") for _, mid in rows)
    assert {mid for _, mid in rows} == {m["sid"] for m in messages}

    stream = keys.stream(settings.namespace, "sms")
    assert redis_client.xlen(stream) == 0
    assert redis_client.xpending(stream, keys.GROUP)["pending"] == 0

    stats = run_leadctl(["--config", str(config), "stats", "--json"], leadctl_env)
    assert stats.returncode == 0, stats.stderr
    sms = json.loads(stats.stdout)["channels"]["sms"]
    assert (sms["queued"], sms["pending"], sms["sent"], sms["failed"]) == (0, 0, 1000, 0)


def test_reingest_queues_nothing_and_redelivery_sends_nothing(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    write_leads(tmp_path / "leads.csv", 50)
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        for _ in range(2):
            result = run_leadctl(
                ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--json"], leadctl_env
            )
            assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["duplicates"] == 50
        stream = keys.stream(settings.namespace, "sms")
        assert redis_client.xlen(stream) == 50
        run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"], leadctl_env
        )
        # the transport redelivers every lead (as after losing acknowledgements): none is sent again
        for lead_id in range(1, 51):
            redis_client.xadd(stream, {b"l": lead_id})
        again = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst", "--json"],
            leadctl_env,
        )
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["statuses"] == {}
        assert sandbox.stats()["accepted"] == 50 and sandbox.stats()["duplicates"] == 0
        assert redis_client.xlen(stream) == 0


def test_refused_credentials_stop_the_run_and_fail_no_lead(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    write_leads(tmp_path / "leads.csv", 20)
    with sandbox_in_thread(auth_token="another-token") as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        result = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"], leadctl_env
        )
        assert sandbox.stats()["accepted"] == 0
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "auth_token" in result.stderr and SANDBOX_AUTH_TOKEN not in result.stderr
    statuses = pg.execute(
        f'SELECT status, attempts, count(*) FROM "{settings.namespace}".lead_deliveries GROUP BY 1, 2'
    ).fetchall()
    assert statuses == [("queued", 0, 20)]
    # their entries were not acknowledged: once reclaimable, a run with the right credentials sends them all
    stream = keys.stream(settings.namespace, "sms")
    assert redis_client.xpending(stream, keys.GROUP)["pending"] == 20
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        again = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst", "--json"],
            leadctl_env,
        )
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["statuses"] == {"sent": 20}
        assert sandbox.stats()["accepted"] == 20


def test_campaign_templates_and_sms_segments_are_used_and_recorded(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    (tmp_path / "leads.csv").write_text(
        "nome,telefone,cidade,campanha\nAna,+5511987650001,Recife,natal\nBia,+5511987650002,Natal,outra\n",
        encoding="utf-8",
    )
    long_text = "x" * 170
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(
            tmp_path / "leadctl.yaml",
            sandbox.base_url,
            extra="campaigns:\n  natal:\n    sms:\n"
            f"      template: 'Feliz Natal {{{{ name }}}} de {{{{ cidade }}}} {long_text}'\n",
        )
        ingest_ok(config, tmp_path / "leads.csv", leadctl_env)
        result = run_leadctl(
            ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"], leadctl_env
        )
        assert result.returncode == 0, result.stderr
        bodies = {m["to"]: m["body"] for m in sandbox.messages()}
    assert bodies["+5511987650001"] == f"Feliz Natal Ana de Recife {long_text}"
    assert bodies["+5511987650002"] == "Oi Bia!"
    segments = dict(
        pg.execute(
            f'SELECT l.contact, d.segments FROM "{settings.namespace}".deliveries d '
            f'JOIN "{settings.namespace}".leads l ON l.id = d.lead_id'
        ).fetchall()
    )
    assert segments == {"+5511987650001": 2, "+5511987650002": 1}


def test_demo_runs_end_to_end_on_configured_servers(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    examples = EXAMPLES / "leads.csv"
    env = {**leadctl_env, "LEADCTL_DATA_DIR": str(tmp_path / "data")}  # not created beforehand
    result = run_leadctl(["demo", "--file", str(examples)], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "200 accepted, 1 rejected" in result.stderr
    assert "received 150 messages, 0 duplicates" in result.stderr
    assert (tmp_path / "data" / "demo.rejects.csv").is_file()


def test_email_through_sendgrid_is_packed_many_leads_per_request(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    lines = ["nome,email"] + [f"Lead {i},lead{i}@example.com" for i in range(300)]
    (tmp_path / "leads.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with sandbox_in_thread() as sandbox:
        config = tmp_path / "leadctl.yaml"
        config.write_text(
            "channels:\n  email:\n    provider: sendgrid\n    concurrency: 50\n"
            f"providers:\n  sendgrid:\n    base_url: {sandbox.base_url}\n"
            f"    api_key: {SANDBOX_SENDGRID_KEY}\n    from: ofertas@example.com\n",
            encoding="utf-8",
        )
        ingest = ["--config", str(config), "ingest", str(tmp_path / "leads.csv"), "--channel", "email"]
        assert run_leadctl(ingest, leadctl_env).returncode == 0
        result = run_leadctl(
            ["--config", str(config), "work", "--channel", "email", "--workers", "1", "--burst", "--json"],
            leadctl_env,
        )
        assert result.returncode == 0, result.stderr
        stats = sandbox.stats()
    assert json.loads(result.stdout)["statuses"] == {"sent": 300}
    assert stats["accepted"] == 300 and stats["duplicates"] == 0
    assert stats["requests"] <= 10  # read batches of up to 100 leads, one request each
    rows = pg.execute(
        f'SELECT status, provider, provider_message_id FROM "{settings.namespace}".deliveries'
    ).fetchall()
    assert {(status, provider) for status, provider, _ in rows} == {("sent", "sendgrid")}
    assert all(mid for _, _, mid in rows)
