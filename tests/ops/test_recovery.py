"""dlq, doubt and requeue over real Redis, PostgreSQL and HTTP; opted-out contacts suppressed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import redis

from leadctl.config import Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.masking import mask_phone
from leadctl.queue import keys
from tests.support.cli import run_leadctl
from tests.support.files import sandbox_config, write_leads
from tests.support.providers import HANG_S
from tests.support.state import statuses

FAST_RETRIES = {
    "LEADCTL_CHANNELS__SMS__MAX_ATTEMPTS": "2",
    "LEADCTL_CHANNELS__SMS__RETRY_INITIAL_MS": "1",
    "LEADCTL_CHANNELS__SMS__RETRY_MAX_MS": "5",
    "LEADCTL_PROVIDERS__TWILIO__BREAKER_FAILURES": "1000",
}


class Cli:
    """`leadctl --config ... ARGS` in a subprocess; ``json()`` checks the exit code and parses stdout."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config, self.env = config, env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_leadctl(["--config", str(self.config), *args], self.env)

    def json(self, *args: str, code: int = 0) -> dict:
        result = self(*args, "--json")
        assert result.returncode == code, result.stderr
        return json.loads(result.stdout)


def _deliveries(pg: psycopg.Connection, namespace: str) -> dict[int, tuple]:
    rows = pg.execute(
        f'SELECT lead_id, status, attempts, error_code, error_message FROM "{namespace}".deliveries'
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_dlq_list_replay_and_purge(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    pg: psycopg.Connection,
) -> None:
    ns = settings.namespace
    phones = write_leads(tmp_path / "leads.csv", 6)
    env = {**leadctl_env, **FAST_RETRIES}
    with sandbox_in_thread(error_rate=1.0) as down:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", down.base_url), env)
        assert cli.json("ingest", str(tmp_path / "leads.csv"))["accepted"] == 6
        assert cli.json("work", "--channel", "sms", "--workers", "1", "--burst", code=1)["statuses"] == {
            "dead": 6
        }

    listed = cli.json("dlq", "list", "--channel", "sms")
    assert listed["total"] == 6 and listed["channels"] == {"sms": 6}
    letters = listed["dead_letters"]
    entry_ids = [tuple(map(int, d["id"].split("-"))) for d in letters]
    assert entry_ids == sorted(entry_ids)  # oldest first
    assert {d["contact"] for d in letters} == {mask_phone(phone) for phone in phones}
    assert not any(phone in json.dumps(listed) for phone in phones)  # masked, as the README says
    assert {(d["channel"], d["status"], d["attempts"]) for d in letters} == {("sms", "dead", 2)}
    assert all("500" in d["reason"] and d["dead_at"] for d in letters)
    lead_ids = [d["lead_id"] for d in letters]

    human = cli("dlq", "list", "--limit", "3")
    assert human.returncode == 0, human.stderr
    assert "dead letters: 6" in human.stdout and "oldest 3 shown" in human.stdout
    assert letters[0]["contact"] in human.stdout
    assert not any(phone in human.stdout for phone in phones)

    # the two oldest go back to the queue, attempts kept
    replayed = cli.json("dlq", "replay", "--channel", "sms", "--limit", "2")
    assert replayed == {
        "replayed": 2,
        "skipped": 0,
        "kept": 0,
        "channels": {"sms": {"replayed": 2, "skipped": 0, "kept": 0}},
    }
    rows = _deliveries(pg, ns)
    assert [rows[i][:2] for i in lead_ids[:2]] == [("queued", 2), ("queued", 2)]
    assert redis_client.xlen(keys.dead_letters(ns, "sms")) == 4

    # of the other four: one was sent meanwhile (its dead letter is stale), one was replayed by a run
    # that stopped before its XADD (queued, no entry); plus a dead letter naming no lead
    sent_meanwhile, half_replayed = lead_ids[2], lead_ids[3]
    pg.execute(f'UPDATE "{ns}".deliveries SET status = %s WHERE lead_id = %s', ("sent", sent_meanwhile))
    pg.execute(f'UPDATE "{ns}".deliveries SET status = %s WHERE lead_id = %s', ("queued", half_replayed))
    redis_client.xadd(
        keys.dead_letters(ns, "sms"), {"entry": "1-1", "lead": "", "reason": "undecodable entry"}
    )

    replayed = cli.json("dlq", "replay")
    assert (replayed["replayed"], replayed["skipped"], replayed["kept"]) == (3, 1, 1)
    assert replayed["channels"]["email"] == {"replayed": 0, "skipped": 0, "kept": 0}
    again = cli.json("dlq", "replay")  # idempotent: nothing left to replay
    assert (again["replayed"], again["skipped"], again["kept"]) == (0, 0, 1)

    with sandbox_in_thread() as up:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", up.base_url), env)
        worked = cli.json("work", "--channel", "sms", "--workers", "1", "--burst")
        assert worked["statuses"] == {"sent": 5}
        assert (up.stats()["accepted"], up.stats()["duplicates"]) == (5, 0)
        sent_to = {m["to"] for m in up.messages()}
    row = pg.execute(f'SELECT contact FROM "{ns}".leads WHERE id = %s', (sent_meanwhile,)).fetchone()
    assert row is not None and row[0] in phones
    assert row[0] not in sent_to  # the lead sent meanwhile was not sent again
    rows = _deliveries(pg, ns)
    assert {rows[i][0] for i in lead_ids} == {"sent"}
    assert rows[lead_ids[0]][1] == 3  # attempts: two before dying, one after the replay

    # purge: asks first; --yes removes what is left (the undecodable entry)
    refused = cli("dlq", "purge")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert redis_client.xlen(keys.dead_letters(ns, "sms")) == 1
    assert cli.json("dlq", "purge", "--yes") == {
        "purged": 1,
        "channels": {"sms": 1, "whatsapp": 0, "email": 0},
    }
    assert cli.json("dlq", "list")["total"] == 0


def test_purge_keeps_leads_dead_in_postgresql(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    write_leads(tmp_path / "leads.csv", 3)
    with sandbox_in_thread(error_rate=1.0) as down:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", down.base_url), {**leadctl_env, **FAST_RETRIES})
        cli.json("ingest", str(tmp_path / "leads.csv"))
        cli.json("work", "--channel", "sms", "--workers", "1", "--burst", code=1)
    assert cli.json("dlq", "purge", "--channel", "sms", "--limit", "2", "--yes")["purged"] == 2
    assert cli.json("dlq", "list")["total"] == 1
    assert statuses(pg, settings.namespace) == {"dead": 3}


def test_doubt_list_resend_and_resolve(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    pg: psycopg.Connection,
) -> None:
    ns = settings.namespace
    phones = write_leads(tmp_path / "leads.csv", 4)
    env = {**leadctl_env, **FAST_RETRIES, "LEADCTL_PROVIDERS__TWILIO__READ_TIMEOUT_MS": "300"}
    with sandbox_in_thread(timeout_rate=1.0, hang_s=HANG_S) as hanging:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", hanging.base_url), env)
        cli.json("ingest", str(tmp_path / "leads.csv"))
        worked = cli.json("work", "--channel", "sms", "--workers", "1", "--burst", code=1)
        assert worked["statuses"] == {"in_doubt": 4}
        assert hanging.stats()["requests"] == 4  # one request each, never retried

    listed = cli.json("doubt", "list")
    assert listed["total"] == 4
    doubtful = listed["in_doubt"]
    assert {d["contact"] for d in doubtful} == set(phones)
    assert all(d["provider"] == "twilio" and "no answer" in d["error"] and d["since"] for d in doubtful)
    assert all(d["channel"] == "sms" and d["attempts"] == 1 for d in doubtful)
    a, b, c, d = (x["lead_id"] for x in doubtful)
    assert [x["lead_id"] for x in cli.json("doubt", "list", "--lead", f"{a},{b}")["in_doubt"]] == [a, b]

    human = cli("doubt", "list")
    assert human.returncode == 0 and "leads in doubt: 4" in human.stdout
    assert mask_phone(phones[0]) in human.stdout and not any(p in human.stdout for p in phones)

    for args in (("doubt", "resend"), ("doubt", "resend", "--lead", "1", "--all"), ("doubt", "resolve")):
        assert cli(*args).returncode == 2
    assert cli("doubt", "resolve", "--as", "maybe", "--all").returncode == 2
    assert cli("doubt", "resend", "--lead", "x1").returncode == 2
    refused = cli("doubt", "resend", "--lead", str(a))
    assert refused.returncode == 2 and "twice" in refused.stderr and "--yes" in refused.stderr
    assert "twice" in cli("doubt", "resend", "--help").stdout.lower()
    assert _deliveries(pg, ns)[a][0] == "in_doubt"

    resent = cli.json("doubt", "resend", "--lead", str(a), "--lead", "999999", "--yes")
    assert resent == {"resent": 1, "lead_ids": {"sms": [a]}, "skipped": [999999]}
    assert _deliveries(pg, ns)[a][0] == "queued"
    assert redis_client.xlen(keys.stream(ns, "sms")) == 1

    resolved = cli.json("doubt", "resolve", "--as", "sent", "--lead", str(b), "--note", "seen in the console")
    assert resolved == {"resolved": 1, "as": "sent", "lead_ids": {"sms": [b]}, "skipped": []}
    status, _, code, message = _deliveries(pg, ns)[b]
    assert (status, code) == ("sent", "operator")
    assert "resolved as sent by the operator: seen in the console" in message and "no answer" in message

    resolved = cli.json("doubt", "resolve", "--as", "failed", "--all", "--channel", "sms")
    assert resolved["resolved"] == 2 and resolved["lead_ids"] == {"sms": [c, d]}
    assert cli.json("doubt", "list")["total"] == 0

    with sandbox_in_thread() as up:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", up.base_url), env)
        assert cli.json("work", "--channel", "sms", "--workers", "1", "--burst")["statuses"] == {"sent": 1}
        assert [m["to"] for m in up.messages()] == [doubtful[0]["contact"]]
    assert statuses(pg, ns) == {"sent": 2, "failed": 2}


def test_requeue_rebuilds_the_queue_from_postgresql(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis,
    pg: psycopg.Connection,
) -> None:
    ns = settings.namespace
    stream = keys.stream(ns, "sms")
    phones = write_leads(tmp_path / "leads.csv", 300)
    with sandbox_in_thread() as sandbox:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url), leadctl_env)
        assert cli.json("ingest", str(tmp_path / "leads.csv"))["accepted"] == 300

        # a crash between PostgreSQL's commit and the XADD lost 50 entries
        lost = [entry_id for entry_id, _ in redis_client.xrange(stream, count=50)]
        redis_client.xdel(stream, *lost)
        requeued = cli.json("requeue", "--channel", "sms")
        assert requeued == {
            "appended": 50,
            "channels": {"sms": {"queued": 300, "in_stream": 250, "appended": 50}},
        }

        # Redis loses everything
        redis_client.delete(*redis_client.scan_iter(match=keys.namespace_pattern(ns), count=1000))
        human = cli("requeue")
        assert human.returncode == 0, human.stderr
        assert "sms: 300 queued, 0 of them in the stream, 300 appended" in human.stderr
        assert human.stdout == ""
        assert cli.json("requeue")["appended"] == 0  # nothing twice

        worked = cli.json("work", "--channel", "sms", "--workers", "2", "--burst")
        assert worked["statuses"] == {"sent": 300}
        assert sandbox.stats()["accepted"] == 300 and sandbox.stats()["duplicates"] == 0
        assert {m["to"] for m in sandbox.messages()} == set(phones)
    assert statuses(pg, ns) == {"sent": 300}
    assert cli.json("requeue")["channels"]["sms"] == {"queued": 0, "in_stream": 0, "appended": 0}


def test_opted_out_contacts_join_the_suppression_list(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    ns = settings.namespace
    (tmp_path / "leads.csv").write_text(
        "nome,telefone\nAna,+5511987650001\nBia,+15005550004\nCris,+15005550001\n", encoding="utf-8"
    )
    with sandbox_in_thread() as sandbox:
        cli = Cli(sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url), leadctl_env)
        assert cli.json("ingest", str(tmp_path / "leads.csv"))["accepted"] == 3
        worked = cli.json("work", "--channel", "sms", "--workers", "1", "--burst", code=1)
        assert worked["statuses"] == {"sent": 1, "failed": 2}
    rows = pg.execute(
        f'SELECT l.contact, d.status, d.error_code FROM "{ns}".deliveries d JOIN "{ns}".leads l '
        "ON l.id = d.lead_id ORDER BY l.contact"
    ).fetchall()
    assert rows == [
        ("+15005550001", "failed", "21211"),
        ("+15005550004", "failed", "21610"),
        ("+5511987650001", "sent", None),
    ]
    suppressed = pg.execute(f'SELECT contact, channel, reason FROM "{ns}".suppressions').fetchall()
    assert suppressed == [("+15005550004", "sms", "opted out at twilio (21610)")]


def test_errors_are_one_line_with_their_exit_code(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    bad_channel = run_leadctl(["dlq", "list", "--channel", "fax"], leadctl_env)
    assert bad_channel.returncode == 2 and bad_channel.stderr.startswith("error: --channel must be one of")
    no_redis = run_leadctl(
        ["requeue", "--json"], {**leadctl_env, "LEADCTL_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert no_redis.returncode == 3 and no_redis.stdout == ""
    assert no_redis.stderr.startswith("error: Redis unreachable") and "Traceback" not in no_redis.stderr
    assert len(no_redis.stderr.strip().splitlines()) == 1
