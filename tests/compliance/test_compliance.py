"""Compliance end to end over real Redis, PostgreSQL and HTTP: opt-out replies, quiet hours with a
controlled clock, frequency caps across concurrent workers, consent at ingest, erasure and export."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
import yaml

from leadctl.config import DAYS, Settings, load_settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.local.sandbox.callbacks import SANDBOX_SENDGRID_PUBLIC_KEY
from leadctl.local.sandbox.server import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_SENDGRID_KEY,
    sandbox_in_thread,
)
from leadctl.queue import keys
from leadctl.send.worker import WorkerOptions, run_worker
from leadctl.store.migrations import drop_namespace
from leadctl.webhooks.server import Running, serve_in_thread
from tests.support import webhooks as kit
from tests.support.cli import run_leadctl
from tests.support.waiting import wait_for


def _providers(base_url: str) -> dict[str, Any]:
    return {
        "twilio": {
            "base_url": base_url,
            "account_sid": SANDBOX_ACCOUNT_SID,
            "auth_token": SANDBOX_AUTH_TOKEN,
            "from": "+15005550006",
        },
        "sendgrid": {
            "base_url": base_url,
            "api_key": SANDBOX_SENDGRID_KEY,
            "from": "ofertas@example.com",
            "webhook_public_key": SANDBOX_SENDGRID_PUBLIC_KEY,
        },
    }


def _config(path: Path, base_url: str, **extra: Any) -> Path:
    tree = {
        "channels": {
            "sms": {"provider": "twilio", "template": "Oi {{ name }}!", "workers": 2},
            "whatsapp": {"provider": "twilio", "template": "Oi {{ name }}!", "workers": 1},
            "email": {"provider": "sendgrid", "workers": 1},
        },
        "providers": _providers(base_url),
        **extra,
    }
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def _csv(path: Path, rows: list[tuple[str, ...]], header: str = "nome,telefone,email,canal") -> Path:
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n", encoding="utf-8")
    return path


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture
def webhooks(settings: Settings) -> Iterator[Running]:
    """`leadctl webhooks serve` for this namespace, verifying the sandbox's signatures."""
    data = settings.model_dump(mode="json", by_alias=True)
    data.update(providers=_providers("http://127.0.0.1:9"), optout={"scope": "all"})
    configured = Settings.model_validate(data)
    open_postgres(configured.database.url or "", configured).close()
    endpoints = Endpoints(configured.redis.url or "", configured.database.url or "")
    with serve_in_thread(configured, endpoints) as running:
        yield running


def _status_of(pg: psycopg.Connection, namespace: str, contact: str, channel: str) -> tuple[Any, ...]:
    row = pg.execute(
        f'SELECT d.status, d.error_code, d.delivery_status FROM "{namespace}".deliveries d '
        f'JOIN "{namespace}".leads l ON l.id = d.lead_id WHERE l.contact = %s AND l.channel = %s',
        (contact, channel),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_opt_out_reply_suppresses_the_contact_and_its_queued_leads(
    webhooks: Running, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection, namespace: str
) -> None:
    stopper, other = "+5511987650001", "+5511987650002"
    rows = [
        (f"Lead {n}", phone, "", channel)
        for n, phone in enumerate((stopper, other))
        for channel in ("sms", "whatsapp")
    ]
    leads = _csv(tmp_path / "leads.csv", rows)
    with sandbox_in_thread(callback_url=webhooks.url, replies={stopper: "Pare!"}, seed=7) as sandbox:
        config = _config(tmp_path / "leadctl.yaml", sandbox.base_url, optout={"scope": "all"})
        _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], leadctl_env))
        sent = _ok(
            run_leadctl(
                ["--config", str(config), "work", "--channel", "sms", "--burst", "--json"], leadctl_env
            )
        )
        assert sent["statuses"] == {"sent": 2}
        wait_for(
            lambda: pg.execute(f'SELECT channel, reason FROM "{namespace}".suppressions').fetchall(),
            what="the opt-out reply to suppress its sender",
        )
        later = _ok(
            run_leadctl(
                ["--config", str(config), "work", "--channel", "whatsapp", "--burst", "--json"], leadctl_env
            )
        )
        received = Counter(m["to"] for m in sandbox.messages())
        wait_for(lambda: _status_of(pg, namespace, other, "sms")[2] == "delivered", what="the receipts")
        stats = _ok(run_leadctl(["--config", str(config), "stats", "--json"], leadctl_env))

    assert later["statuses"] == {"sent": 1, "suppressed": 1}
    assert received == {stopper: 1, other: 1, f"whatsapp:{other}": 1}  # never the stopper's whatsapp
    assert _status_of(pg, namespace, stopper, "whatsapp")[:2] == ("suppressed", "suppressed")
    (channel, reason), *_ = pg.execute(f'SELECT channel, reason FROM "{namespace}".suppressions').fetchall()
    assert channel == "*" and "'Pare!'" in reason
    assert stats["channels"]["sms"]["delivered"] == 2
    assert stats["channels"]["whatsapp"]["suppressed"] == 1
    assert stats["providers"]["twilio"]["delivered"] >= 2


def _run_worker(settings: Settings, channel: str, clock: datetime) -> dict[str, int]:
    endpoints = Endpoints(settings.redis.url or "", settings.database.url or "")
    options = WorkerOptions(channel, f"test:{uuid.uuid4().hex[:6]}", burst=True, clock=clock.timestamp)
    report = asyncio.run(run_worker(settings, endpoints, options, asyncio.Event()))
    return dict(report.statuses)


def test_quiet_hours_defer_and_send_once_the_window_opens(
    leadctl_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis, namespace: str
) -> None:
    rows = [
        ("Sampa", "+5511987650010", "America/Sao_Paulo"),
        ("Paulista", "+5511987650011", ""),
        ("Acre", "+5568999990012", ""),  # Rio Branco, five hours behind UTC
        ("Noronha", "+5511987650013", "America/Noronha"),  # the lead's own field wins over the number
    ]
    leads = _csv(tmp_path / "leads.csv", [(n, p, tz) for n, p, tz in rows], header="nome,telefone,timezone")
    quiet = {"quiet_hours": {"sms": {"allow": "09:00-20:00", "days": "mon-sat"}}}
    with sandbox_in_thread() as sandbox:
        config = _config(tmp_path / "leadctl.yaml", sandbox.base_url, compliance=quiet)
        _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], leadctl_env))
        settings = load_settings(config, environ=leadctl_env)

        def sent_to() -> set[str]:
            return {m["to"] for m in sandbox.messages()}

        sunday = datetime(2024, 6, 9, 15, 0, tzinfo=UTC)  # noon in São Paulo, but a Sunday
        assert _run_worker(settings, "sms", sunday) == {"deferred": 4}
        assert sent_to() == set()
        waiting = dict(redis_client.zrange(keys.delayed(namespace, "sms"), 0, -1, withscores=True))
        monday = datetime(2024, 6, 10, tzinfo=UTC)
        opens = sorted(datetime.fromtimestamp(score, UTC) - monday for score in waiting.values())
        assert opens == [timedelta(hours=11), timedelta(hours=12), timedelta(hours=12), timedelta(hours=14)]

        assert _run_worker(settings, "sms", monday + timedelta(hours=11, minutes=30)) == {"sent": 1}
        assert sent_to() == {"+5511987650013"}  # 09:30 in Noronha; 08:30 in São Paulo
        assert _run_worker(settings, "sms", monday + timedelta(hours=12)) == {"sent": 2}
        assert sent_to() == {"+5511987650013", "+5511987650010", "+5511987650011"}
        assert _run_worker(settings, "sms", monday + timedelta(hours=13, minutes=59)) == {}
        assert _run_worker(settings, "sms", monday + timedelta(hours=14)) == {"sent": 1}
        assert len(sandbox.messages()) == 4
    assert redis_client.zcard(keys.delayed(namespace, "sms")) == 0


def test_batch_reports_leads_outside_their_window_as_deferred(
    leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection, namespace: str
) -> None:
    today = datetime.now(ZoneInfo("America/Sao_Paulo")).weekday()
    closed = {today, (today + 1) % 7}  # robust to midnight passing during the test
    days = ",".join(DAYS[d] for d in range(7) if d not in closed)
    quiet = {"quiet_hours": {"sms": {"allow": "00:00-24:00", "days": days}}}
    leads = _csv(tmp_path / "leads.csv", [(f"Lead {n}", f"+55119876501{n:02d}", "", "sms") for n in range(5)])
    with sandbox_in_thread() as sandbox:
        config = _config(tmp_path / "leadctl.yaml", sandbox.base_url, compliance=quiet)
        _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], leadctl_env))
        report = _ok(
            run_leadctl(["--config", str(config), "batch", "--channel", "sms", "--json"], leadctl_env)
        )
        stats = _ok(run_leadctl(["--config", str(config), "stats", "--json"], leadctl_env))
        assert sandbox.messages() == []
    sms = report["channels"]["sms"]
    assert (sms["sent"], sms["deferred"], sms["failed"], sms["remaining"]) == (0, 5, 0, 0)
    assert (stats["channels"]["sms"]["queued"], stats["channels"]["sms"]["deferred"]) == (5, 5)
    assert stats["alerts"] == []  # leads waiting for their window are not a stalled queue
    rows = pg.execute(
        f'SELECT status, error_code, attempts, not_before > now() FROM "{namespace}".deliveries'
    ).fetchall()
    assert set(rows) == {("queued", "quiet_hours", 0, True)}


def test_frequency_cap_holds_across_concurrent_workers_and_namespaces(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    # Within one namespace a contact has one lead per channel; namespaces sharing a caps scope
    # (one per brand or client) are where the same person is reached again.
    person = "+5511987654000"
    scope = settings.namespace
    namespaces = [scope, f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}"]
    caps = {"caps": {"sms": "2/day"}, "caps_scope": scope}
    try:
        with sandbox_in_thread(latency_ms=20, seed=3) as sandbox:
            config = _config(tmp_path / "leadctl.yaml", sandbox.base_url, compliance=caps)
            envs = []
            for n, ns in enumerate(namespaces):
                env = {**leadctl_env, "LEADCTL_NAMESPACE": ns}
                rows = [("Ana", person, "", "sms")] + [
                    (f"L{i}", f"+55119876{n}{i:04d}", "", "sms") for i in range(30)
                ]
                leads = _csv(tmp_path / f"leads{n}.csv", rows)
                _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], env))
                envs.append(env)
            command = [sys.executable, "-m", "leadctl", "--config", str(config), "work", "--channel", "sms"]
            runs = [
                subprocess.Popen(
                    [*command, "--workers", "2", "--burst", "--json"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for env in envs
            ]
            reports = []
            for run in runs:
                out, err = run.communicate(timeout=120)
                assert run.returncode == 0, err
                reports.append(json.loads(out)["statuses"])
            received = Counter(m["to"] for m in sandbox.messages())
        assert received[person] == 2
        assert sum(r.get("deferred", 0) for r in reports) == 1
        assert sum(r.get("sent", 0) for r in reports) == 3 * 30 + 2
        waiting = [
            row
            for ns in namespaces
            for row in pg.execute(
                f'SELECT d.error_code, d.not_before - now() FROM "{ns}".deliveries d JOIN "{ns}".leads l '
                "ON l.id = d.lead_id WHERE l.contact = %s AND d.status = 'queued'",
                (person,),
            ).fetchall()
        ]
        assert len(waiting) == 1 and waiting[0][0] == "frequency_cap"
        assert timedelta(hours=23) < waiting[0][1] <= timedelta(days=1)
        cap_keys = list(redis_client.scan_iter(match=f"{{{scope}:caps}}:sms:*"))
        assert len(cap_keys) == 3 * 30 + 1 and not any(b"5511987654000" in key for key in cap_keys)
    finally:
        for ns in namespaces[1:]:
            stale = list(redis_client.scan_iter(match=keys.namespace_pattern(ns)))
            if stale:
                redis_client.delete(*stale)
            drop_namespace(pg, ns)


def test_consent_required_by_a_campaign(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    rows = [
        ("Ana", "+5511987650031", "2024-05-01T10:00:00Z", "landing-page"),
        ("Bia", "+5511987650032", "", "landing-page"),
        ("Caio", "+5511987650033", "", ""),
    ]
    leads = _csv(tmp_path / "leads.csv", rows, header="nome,telefone,consent_at,consent_source")
    consent = {"campaigns": {"bf": {"require_consent": ["consent_at", "consent_source"]}}}
    config = _config(tmp_path / "leadctl.yaml", "http://127.0.0.1:9", compliance=consent)
    result = run_leadctl(
        ["--config", str(config), "ingest", str(leads), "--campaign", "bf", "--json"], leadctl_env
    )
    assert result.returncode == 1, result.stderr  # some rows rejected
    report = json.loads(result.stdout)
    assert (report["accepted"], report["rejected"], report["reasons"]) == (1, 2, {"no_consent": 2})
    rejects = Path(report["rejects_file"]).read_text(encoding="utf-8")
    assert "campaign 'bf' requires consent: consent_at is empty" in rejects
    assert "consent_at, consent_source is empty" in rejects
    other = _ok(
        run_leadctl(
            ["--config", str(config), "ingest", str(leads), "--campaign", "natal", "--json"], leadctl_env
        )
    )
    assert other["accepted"] == 2  # Ana is already recorded; no consent needed for this campaign


def _value(client: redis.Redis, key: bytes) -> Any:
    """Whatever a key holds, by its type."""
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == b"set":
        return client.smembers(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    return client.xrange(key)  # a stream


def _traces(pg: psycopg.Connection, client: redis.Redis, namespace: str, needles: list[str]) -> list[str]:
    """Every table row and every Redis key or value of the namespace that mentions a needle."""
    found = []
    tables = [t for (t,) in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (namespace,))]
    for table in tables:
        for needle in needles:
            (count,) = pg.execute(
                f'SELECT count(*) FROM "{namespace}"."{table}" t WHERE strpos(lower(t::text), %s) > 0',
                (needle,),
            ).fetchone()
            if count:
                found.append(f"{table}: {count} rows with {needle}")
    for key in client.scan_iter(match=keys.namespace_pattern(namespace)):
        text = (repr(key) + repr(_value(client, key))).lower()
        found += [f"redis {key!r} holds {needle}" for needle in needles if needle in text]
    return found


def test_forget_leaves_no_trace_and_keeps_the_person_out(
    webhooks: Running,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    phone, email = "+5511999990001", "pessoa@example.com"
    rows = [
        ("Pessoa", phone, email, "sms"),
        ("Pessoa", phone, email, "email"),
        ("Pessoa", phone, "", "whatsapp"),
        ("Outra", "+5511999990002", "outra@example.com", "sms"),
        ("Outra", "+5511999990002", "outra@example.com", "email"),
    ]
    leads = _csv(tmp_path / "leads.csv", rows)
    compliance = {"caps": {"sms": "5/day"}}
    needles = [phone.removeprefix("+"), email]
    with sandbox_in_thread(callback_url=webhooks.url, seed=11) as sandbox:
        config = _config(tmp_path / "leadctl.yaml", sandbox.base_url, compliance=compliance)
        _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], leadctl_env))
        for channel in ("sms", "email"):
            _ok(
                run_leadctl(
                    ["--config", str(config), "work", "--channel", channel, "--burst", "--json"], leadctl_env
                )
            )
        sandbox.reply("twilio", "sms", phone, "SAIR")
        status = {
            "MessageSid": "SMnotours",
            "MessageStatus": "delivered",
            "To": phone,
            "From": "+15005550006",
        }
        assert (
            kit.twilio(webhooks.url + "/webhooks/twilio/status", status, token=SANDBOX_AUTH_TOKEN)[0] == 200
        )
        wait_for(lambda: _status_of(pg, namespace, email, "email")[2] == "read", what="the email receipts")
        wait_for(
            lambda: pg.execute(f'SELECT count(*) FROM "{namespace}".suppressions').fetchone()[0] == 1,
            what="the opt-out",
        )
        _ok(run_leadctl(["--config", str(config), "suppress", "add", email, "--json"], leadctl_env))
        (email_lead,) = pg.execute(
            f'SELECT id FROM "{namespace}".leads WHERE contact = %s', (email,)
        ).fetchone()
        redis_client.zadd(keys.delayed(namespace, "email"), {str(email_lead): 1})
        redis_client.xadd(
            keys.dead_letters(namespace, "email"), {"entry": "0-1", "lead": email_lead, "reason": "test"}
        )
        exported = _ok(run_leadctl(["--config", str(config), "export", "(11) 99999-0001"], leadctl_env))
        assert {lead["channel"] for lead in exported["leads"]} == {"sms", "email", "whatsapp"}
        assert exported["suppressions"] and exported["webhook_events"] and not exported["erased"]
        assert _traces(pg, redis_client, namespace, needles)  # the search does find them

        by_phone = _ok(
            run_leadctl(["--config", str(config), "forget", "+55 (11) 99999-0001", "--json"], leadctl_env)
        )
        by_email = _ok(
            run_leadctl(["--config", str(config), "forget", "Pessoa@Example.com", "--json"], leadctl_env)
        )
        assert _traces(pg, redis_client, namespace, needles) == []

        again = _ok(run_leadctl(["--config", str(config), "ingest", str(leads), "--json"], leadctl_env))
        afterwards = _ok(run_leadctl(["--config", str(config), "export", phone], leadctl_env))

    assert by_phone["contact"] == "+5511*****0001"
    assert (by_phone["leads"], by_phone["deliveries"], by_phone["stream_entries"], by_phone["cap_keys"]) == (
        3,
        3,
        1,
        1,
    )
    assert (
        by_phone["suppressions"] == 1 and by_phone["webhook_events"] >= 2
    )  # the opt-out and the unknown receipt
    assert (by_email["leads"], by_email["suppressions"]) == (0, 1)
    assert (
        by_phone["deferred"] + by_email["deferred"],
        by_phone["dead_letters"] + by_email["dead_letters"],
    ) == (1, 1)
    assert (again["accepted"], again["duplicates"]) == (0, 5)  # the erased person stays out
    assert _traces(pg, redis_client, namespace, needles) == []
    assert (afterwards["leads"], afterwards["erased"]) == ([], True)
    remaining = pg.execute(f'SELECT contact FROM "{namespace}".leads ORDER BY 1').fetchall()
    assert remaining == [("+5511999990002",), ("outra@example.com",)]


def test_forget_matches_an_email_whatever_the_case_of_its_accented_local_part(
    leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection, namespace: str
) -> None:
    """Contacts compare byte by byte (COLLATE "C"), yet the erasure lookup lower-cases them with the
    database's locale, as Python does: 'JOÃO' is 'joão', not 'joÃo'."""
    leads = _csv(tmp_path / "leads.csv", [("João", "", "JOÃO@Exemplo.com.br", "email")])
    _ok(run_leadctl(["ingest", str(leads), "--json"], leadctl_env))
    _ok(run_leadctl(["suppress", "add", "JOÃO@exemplo.com.br", "--json"], leadctl_env))

    forgotten = _ok(run_leadctl(["forget", "joão@exemplo.com.br", "--json"], leadctl_env))

    assert (forgotten["leads"], forgotten["suppressions"]) == (1, 1)
    assert pg.execute(f'SELECT count(*) FROM "{namespace}".leads').fetchone() == (0,)
    assert pg.execute(f'SELECT count(*) FROM "{namespace}".suppressions').fetchone() == (0,)
