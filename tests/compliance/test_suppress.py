"""`leadctl suppress` against real PostgreSQL: contacts normalised as ingest stores them."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from leadctl.config import Settings
from tests.support.cli import assert_one_line_error, run_leadctl


def suppress(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, dict]:
    result = run_leadctl(["suppress", *args, "--json"], env, stdin=stdin)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout else {}


def entries(pg: psycopg.Connection, namespace: str) -> set[tuple[str, str, str]]:
    rows = pg.execute(f'SELECT contact, channel, reason FROM "{namespace}".suppressions').fetchall()
    return set(rows)


def test_add_normalises_and_keeps_reason_and_time(
    settings: Settings, leadctl_env: dict[str, str], pg: psycopg.Connection
) -> None:
    code, added = suppress(
        leadctl_env, "add", "(11) 8765-4321", "Ana@Example.COM", "+55 11 98765-4321", "--reason", "opt-out"
    )
    assert code == 0
    assert added == {"added": 2, "already": 0, "channel": "all"}  # the old 8-digit mobile is the same number
    code, again = suppress(leadctl_env, "add", "11987654321", "--reason", "other", "--channel", "sms")
    assert (code, again["added"]) == (0, 1)
    code, same = suppress(leadctl_env, "add", "11987654321", "--channel", "sms")
    assert same == {"added": 0, "already": 1, "channel": "sms"}
    assert entries(pg, settings.namespace) == {
        ("+5511987654321", "*", "opt-out"),
        ("Ana@example.com", "*", "opt-out"),
        ("+5511987654321", "sms", "other"),
    }
    code, listed = suppress(leadctl_env, "list")
    assert listed["count"] == 3
    assert {(e["contact"], e["channel"]) for e in listed["suppressions"]} == {
        ("+5511987654321", "all"),
        ("Ana@example.com", "all"),
        ("+5511987654321", "sms"),
    }
    assert all(e["created_at"] for e in listed["suppressions"])
    code, only_sms = suppress(leadctl_env, "list", "--channel", "sms")
    assert only_sms["count"] == 1


def test_remove(settings: Settings, leadctl_env: dict[str, str], pg: psycopg.Connection) -> None:
    suppress(leadctl_env, "add", "11987654321", "a@example.com")
    suppress(leadctl_env, "add", "11987654321", "--channel", "whatsapp")
    assert suppress(leadctl_env, "remove", "+55 11 98765-4321", "--channel", "all") == (0, {"removed": 1})
    assert suppress(leadctl_env, "remove", "11987654321", "a@example.com") == (0, {"removed": 2})
    assert entries(pg, settings.namespace) == set()


def test_invalid_contacts_and_channels_are_usage_errors(leadctl_env: dict[str, str]) -> None:
    for args, fragment in (
        (["add", "123"], "too short"),
        (["add", "not-an-email@"], "email"),
        (["add", "a@example.com", "--channel", "sms"], "cannot be suppressed on sms"),
        (["add", "11987654321", "--channel", "fax"], "--channel"),
    ):
        result = run_leadctl(["suppress", *args], leadctl_env)
        assert result.returncode == 2, args
        assert_one_line_error(result.stderr, fragment)
        assert "987654321" not in result.stderr  # contacts are masked in messages


def test_import_a_lead_file_and_a_plain_list(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    path = tmp_path / "optout.csv"
    path.write_text(
        "Nome;Celular;E-mail\nAna;(11) 98765-4321;ana@example.com\nBia;123;\nCaio;;caio@example.com\n",
        encoding="cp1252",
    )
    code, report = suppress(leadctl_env, "import", str(path), "--reason", "crm")
    assert code == 1
    assert (report["added"], report["already"]) == (3, 0)
    assert report["invalid"] == [
        {"line": 3, "reason_code": "invalid_phone", "message": "phone is too short for BR (+55)"}
    ]
    code, listed = suppress(
        leadctl_env, "import", "-", "--channel", "email", stdin="x@example.com\nana@example.com\n"
    )
    assert code == 0 and (listed["added"], listed["already"]) == (2, 0)
    assert ("x@example.com", "email", "") in entries(pg, settings.namespace)


def test_import_needs_a_contact_column(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("nome,cidade\nAna,Recife\n", encoding="utf-8")
    result = run_leadctl(["suppress", "import", str(path)], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no phone or email column")
    result = run_leadctl(["suppress", "import", str(tmp_path / "nope.csv")], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no such file")
