"""`leadctl ingest` end to end, as a user runs it, against real Redis and PostgreSQL.

Every test checks the accounting identity (rows = accepted + rejected + duplicates + suppressed) and
that what the report says was queued is exactly what is in PostgreSQL and in the streams.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from leadctl.config import Settings
from leadctl.queue import keys
from tests.support.cli import assert_one_line_error, run_leadctl
from tests.support.files import read_rejects
from tests.support.state import queued_contacts, statuses

HEADER = "nome,telefone,email\n"


def ingest(
    env: dict[str, str], *args: str, cwd: Path | None = None, stdin: str | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run `leadctl ingest ARGS --json`; return the exit code, the report (checked) and stderr."""
    result = run_leadctl(["ingest", *args, "--json"], env, cwd=cwd, stdin=stdin)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout) if result.stdout else {}
    if report:
        assert_reconciles(report)
    return result.returncode, report, result.stderr


def assert_reconciles(report: dict[str, Any]) -> None:
    for figures in [report, *report.get("files", [])]:
        assert figures["rows"] == (
            figures["accepted"] + figures["rejected"] + figures["duplicates"] + figures["suppressed"]
        ), figures
        assert figures["rejected"] == sum(figures["reasons"].values()), figures


def test_csv_end_to_end_with_rejects_file(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        HEADER
        + "Ana,(11) 98765-4321,ana@example.com\n"
        + '=HYPERLINK("http://x"),123,evil@example.com\n'
        + "Caio,+55 11 98765-4322,\n"
        + "Ana again,+5511987654321,\n"
        + "Duda,,\n"
        + "Edu,+55 11 3333-4444,\n",
        encoding="utf-8",
    )
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 1
    assert (report["rows"], report["accepted"], report["rejected"], report["duplicates"]) == (6, 2, 3, 1)
    assert report["reasons"] == {"invalid_phone": 1, "missing_contact": 1, "landline": 1}
    assert report["channels"] == {"sms": 2}
    assert report["rejects_file"] == f"{path}.rejects.csv"
    assert report["rows_per_s"] > 0 and report["seconds"] > 0
    rows = read_rejects(Path(report["rejects_file"]))
    assert rows[0] == ["line", "reason_code", "message", "nome", "telefone", "email"]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("3", "invalid_phone"),
        ("6", "missing_contact"),
        ("7", "landline"),
    ]
    assert rows[1][3] == '\'=HYPERLINK("http://x")'  # neutralised, never evaluated
    assert queued_contacts(pg, redis_client, settings.namespace) == ["+5511987654321", "+5511987654322"]
    name = pg.execute(f'SELECT name FROM "{settings.namespace}".leads ORDER BY id LIMIT 1').fetchone()
    assert name == ("Ana",)  # the first row of a contact wins


def test_reingest_and_several_files_queue_each_lead_once(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + "".join(f"L{i},+55119876500{i:02d},\n" for i in range(30)), encoding="utf-8")
    second.write_text(
        HEADER + "".join(f"M{i},+55119876500{i:02d},\n" for i in range(20, 50)), encoding="utf-8"
    )
    code, report, _ = ingest(leadctl_env, str(first), str(second))
    assert code == 0
    assert (report["rows"], report["accepted"], report["duplicates"]) == (60, 50, 10)
    assert [(f["source"], f["accepted"], f["duplicates"]) for f in report["files"]] == [
        (str(first), 30, 0),
        (str(second), 20, 10),
    ]
    assert report["rejects_files"] == [] and report["rejects_file"] is None
    code, again, _ = ingest(leadctl_env, str(second), str(first))
    assert code == 0
    assert (again["rows"], again["accepted"], again["duplicates"]) == (60, 0, 60)
    queued = queued_contacts(pg, redis_client, settings.namespace)
    assert len(queued) == len(set(queued)) == 50
    assert statuses(pg, settings.namespace, channel=None) == {"queued": 50}


def test_suppressed_contacts_never_reach_the_stream(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    added = run_leadctl(
        ["suppress", "add", "(11) 98765-0001", "+55 11 98765-0002", "--reason", "opt-out", "--json"],
        leadctl_env,
    )
    assert added.returncode == 0, added.stderr
    only_sms = run_leadctl(["suppress", "add", "11987650003", "--channel", "sms"], leadctl_env)
    assert only_sms.returncode == 0, only_sms.stderr
    path = tmp_path / "leads.csv"
    path.write_text(
        "nome,telefone,canal\n"
        + "".join(f"L{i},+55119876500{i:02d},SMS\n" for i in range(10))
        + "W,+5511987650003,WhatsApp\n"
        + "again,11 98765-0001,sms\n",
        encoding="utf-8",
    )
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 0
    assert (report["rows"], report["accepted"], report["suppressed"], report["duplicates"]) == (12, 8, 3, 1)
    assert report["channels"] == {"sms": 7, "whatsapp": 1}
    sms = queued_contacts(pg, redis_client, settings.namespace, "sms")
    assert not {"+5511987650001", "+5511987650002", "+5511987650003"} & set(sms)
    assert queued_contacts(pg, redis_client, settings.namespace, "whatsapp") == ["+5511987650003"]
    assert statuses(pg, settings.namespace, channel=None) == {"queued": 8, "suppressed": 3}


def test_dry_run_writes_nothing_and_counts_duplicates_in_the_input(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        HEADER + "Ana,+5511987654321,\nBia,x,\nAna,(11) 98765-4321,\nCaio,+5511987654322,\n", encoding="utf-8"
    )
    code, report, _ = ingest(leadctl_env, str(path), "--dry-run")
    assert code == 1
    assert (report["rows"], report["accepted"], report["rejected"], report["duplicates"]) == (4, 2, 1, 1)
    assert report["dry_run"] is True and report["rejects_file"] is None
    assert not (tmp_path / "leads.csv.rejects.csv").exists()
    assert pg.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (settings.namespace,)
    ).fetchone() == (0,)
    assert redis_client.exists(keys.stream(settings.namespace, "sms")) == 0
    code, report, _ = ingest(leadctl_env, str(path), "--dry-run", "--rejects", str(tmp_path / "r.csv"))
    assert report["rejects_file"] == str(tmp_path / "r.csv")
    assert [row[:2] for row in read_rejects(tmp_path / "r.csv")[1:]] == [["3", "invalid_phone"]]


def test_stdin_and_gzip(settings: Settings, leadctl_env: dict[str, str], tmp_path: Path) -> None:
    code, report, _ = ingest(leadctl_env, "-", cwd=tmp_path, stdin="Nome;Celular\nAna;11987654321\nBia;abc\n")
    assert code == 1
    assert (report["rows"], report["accepted"], report["rejected"]) == (2, 1, 1)
    assert report["rejects_file"] == "stdin.rejects.csv"
    assert read_rejects(tmp_path / "stdin.rejects.csv")[1][:2] == ["3", "invalid_phone"]
    gz = tmp_path / "more.ndjson.gz"
    gz.write_bytes(gzip.compress(b'{"phone": "+5511987654330"}\n{"phone": "+5511987654331"}\n'))
    code, report, _ = ingest(leadctl_env, str(gz))
    assert code == 0 and report["accepted"] == 2
    assert report["files"][0]["source"] == str(gz)


@pytest.mark.parametrize(
    ("name", "content", "args", "expected"),
    [
        ("tabs.tsv", b"Nome\tTelefone\nAna\t11987654321\n", [], (1, 0)),
        (
            "excel.csv",
            "Nome;Telefone Celular;Cidade\nJoão;(11) 98765-4321;São Paulo\n".encode("cp1252"),
            [],
            (1, 0),
        ),
        ("bom.csv", "\ufeffE-mail,Nome\nana@example.com,Ana\n".encode(), [], (1, 0)),
        ("pipes.txt", b"fone|nome\n11987654321|Ana\n", ["--format", "csv"], (1, 0)),
        ("semi.csv", b"a;b\n11987654321;Ana\n", ["--delimiter", ";", "--map", "a=phone"], (1, 0)),
        (
            "bare.csv",
            b"11987654321,Ana\n11987654322,Bia\n",
            ["--no-headers", "--columns", "phone,name"],
            (2, 0),
        ),
        ("array.json", b'[{"whatsapp": "11987654321", "canal": "zap", "extra": {"a": 1}}]', [], (1, 0)),
        ("holder.json", b'{"leads": [{"email": "Ana@Example.COM"}], "total": 1}', [], (1, 0)),
        ("lines.jsonl", b'{"phone": "11987654321"}\n{"phone": \n{"phone": "11987654322"}\n', [], (2, 1)),
        (
            "latin.csv",
            "nome,telefone\nJoão,11987654321\n".encode("latin-1"),
            ["--encoding", "latin-1"],
            (1, 0),
        ),
    ],
)
def test_formats_encodings_and_aliases(
    leadctl_env: dict[str, str],
    tmp_path: Path,
    name: str,
    content: bytes,
    args: list[str],
    expected: tuple[int, int],
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, report, stderr = ingest(leadctl_env, str(path), *args)
    assert (report["accepted"], report["rejected"]) == expected, stderr
    assert code == (1 if expected[1] else 0)


def test_fields_and_names_survive_the_trip(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    path = tmp_path / "tricky.csv"
    path.write_text(
        'nome,telefone,notas,cidade\n"Silva, João ""Jota""",11987654321,"linha 1\n\\.\nlinha 3",São Paulo\n'
        "@SUM(A1),11987654322,{{ 7*7 }},-1\n",
        encoding="utf-8",
    )
    code, report, _ = ingest(leadctl_env, str(path), "--campaign", "natal")
    assert code == 0 and report["accepted"] == 2
    rows = pg.execute(
        f'SELECT name, fields, campaign, source_line FROM "{settings.namespace}".leads ORDER BY id'
    ).fetchall()
    assert rows == [
        ('Silva, João "Jota"', {"notas": "linha 1\n\\.\nlinha 3", "cidade": "São Paulo"}, "natal", 2),
        ("@SUM(A1)", {"notas": "{{ 7*7 }}", "cidade": "-1"}, "natal", 5),
    ]


def test_nul_characters_are_rejected_not_a_crash(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    path = tmp_path / "nul.ndjson"
    path.write_text(
        '{"phone": "11987654321", "name": "A\\u0000na"}\n{"phone": "11987654322", "x": {"k\\u0000": 1}}\n'
        '{"phone": "11987654323", "name": "ok"}\n',
        encoding="utf-8",
    )
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 1
    assert (report["accepted"], report["reasons"]) == (1, {"invalid_character": 2})


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("garbage.csv", bytes(range(256)) * 8, "binary"),
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n  \n", "empty"),
        ("broken.json", b'[{"phone": "11987654321"},', "invalid JSON"),
        ("scalar.json", b'{"phone": "11987654321"}', "list of lead objects"),
        ("numbers.json", b"[1, 2, 3]", "list of lead objects"),
        ("nocontact.csv", b"nome,cidade\nAna,Recife\n", "no phone or email column"),
        ("book.xlsx", b"PK\x03\x04rest-of-a-zip", "Excel"),
    ],
)
def test_unusable_inputs_are_one_line_errors(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    name: str,
    content: bytes,
    fragment: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_leadctl(["ingest", str(path), "--json"], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, name, fragment)
    assert result.stdout == ""
    assert not (tmp_path / f"{name}.rejects.csv").exists()


def test_bad_rows_are_reject_lines(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    big = "x" * (10 * 1024 * 1024)
    path.write_text(
        HEADER
        + "Ana,11987654321\n"  # too few fields
        + "Bia,11987654322,b@example.com,extra\n"  # too many
        + f"Caio,11987654323,{big}\n"  # a 10 MB field: just data (an invalid email here)
        + 'Duda,"11987654324,d@example.com\n'  # a quote never closed
        + "Edu,11987654325,e@example.com\n",
        encoding="utf-8",
    )
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 1
    assert report["reasons"] == {"ragged_row": 2, "unterminated_quote": 1}
    assert report["accepted"] == 2 and report["flags"] == {"invalid_email": 1}
    lines = [row[:2] for row in read_rejects(Path(report["rejects_file"]))[1:]]
    assert lines == [["2", "ragged_row"], ["3", "ragged_row"], ["5", "unterminated_quote"]]


def test_header_only_file_ingests_nothing(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text(HEADER, encoding="utf-8")
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 0 and report["rows"] == 0


def test_input_unusable_half_way_stops_with_what_was_done(
    settings: Settings,
    leadctl_env: dict[str, str],
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
) -> None:
    noise = random.Random(3)  # names gzip cannot shrink much, so the cut lands deep in the file
    body = "".join(f"L{noise.getrandbits(128):x},+55119{80000000 + i:08d},\n" for i in range(60_000))
    whole = gzip.compress((HEADER + body).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    result = run_leadctl(["ingest", str(path), "--json"], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "cut.csv.gz", "stopped after", "ingesting the input again is safe")
    report = json.loads(result.stdout)
    assert_reconciles(report)
    assert 0 < report["accepted"] < 60_000 and report["error"]
    assert statuses(pg, settings.namespace, channel=None) == {"queued": report["accepted"]}
    assert redis_client.xlen(keys.stream(settings.namespace, "sms")) == report["accepted"]
    (tmp_path / "whole.csv.gz").write_bytes(whole)
    code, again, _ = ingest(leadctl_env, str(tmp_path / "whole.csv.gz"))
    assert code == 0
    assert (again["duplicates"], again["accepted"]) == (report["accepted"], 60_000 - report["accepted"])
    assert redis_client.xlen(keys.stream(settings.namespace, "sms")) == 60_000


def test_rejects_options(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + "Ana,1,\n", encoding="utf-8")
    b.write_text(HEADER + "Bia,2,\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    code, report, _ = ingest(leadctl_env, str(a), str(b), "--rejects", str(out))
    assert code == 1
    assert report["rejects_files"] == [str(out / "a.csv.rejects.csv"), str(out / "b.csv.rejects.csv")]
    result = run_leadctl(["ingest", str(a), str(b), "--rejects", str(tmp_path / "one.csv")], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "directory")
    result = run_leadctl(["ingest", str(a), "--rejects", str(a)], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "overwrite the input")
    assert a.read_text(encoding="utf-8") == HEADER + "Ana,1,\n"


def test_a_stale_rejects_file_is_removed(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(HEADER + "Ana,1,\n", encoding="utf-8")
    assert ingest(leadctl_env, str(path))[0] == 1
    path.write_text(HEADER + "Ana,11987654321,\n", encoding="utf-8")
    code, report, _ = ingest(leadctl_env, str(path))
    assert code == 0 and report["rejects_file"] is None
    assert not (tmp_path / "leads.csv.rejects.csv").exists()


def test_human_summary_goes_to_stderr(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(HEADER + "Ana,11987654321,\nBia,1,\n", encoding="utf-8")
    result = run_leadctl(["ingest", str(path)], leadctl_env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "2 rows: 1 accepted, 1 rejected, 0 duplicates, 0 suppressed" in result.stderr
    assert "invalid_phone 1" in result.stderr and "leads.csv.rejects.csv" in result.stderr
    quiet = run_leadctl(["--quiet", "ingest", str(path)], leadctl_env)
    assert quiet.returncode == 1 and quiet.stdout == quiet.stderr == ""


def test_inputs_sharing_a_rejects_file_are_refused(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        (tmp_path / folder / "leads.csv").write_text(HEADER + "Ana,1,\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    result = run_leadctl(
        [
            "ingest",
            str(tmp_path / "x" / "leads.csv"),
            str(tmp_path / "y" / "leads.csv"),
            "--rejects",
            str(out),
        ],
        leadctl_env,
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "share a rejects file")
