"""The ingest pipeline as a library: chunked reading, parse processes, writer threads, dry-run counting.

Parallel ingest must give exactly what reading the file in one go gives: the same rejects with the
same lines, and the first row of each contact recorded.
"""

from __future__ import annotations

import gzip
import random
import tracemalloc
from pathlib import Path

import psycopg
import pytest
import redis

from leadctl.config import Settings
from leadctl.connections import open_postgres
from leadctl.ingest import ParseOptions, parse_leads
from leadctl.ingest import pipeline as pipeline_module
from leadctl.ingest.batches import _copy_line, _is_plain, contact_key, parse_batch
from leadctl.ingest.distinct import DistinctCounter
from leadctl.ingest.parse import open_leads
from leadctl.ingest.pipeline import Ingestor, Progress
from leadctl.ingest.readers import Chunk, expand
from leadctl.records import Lead, Reject
from tests.support.files import read_rejects
from tests.support.state import queued_contacts


def tricky_csv(rows: int, seed: int = 5) -> str:
    """A CSV with every shape that matters for cutting it into chunks."""
    rng = random.Random(seed)
    lines = ["nome,telefone,notas\r\n", "\r\n"]
    for i in range(rows):
        phone = f"+55119{80000000 + rng.randrange(rows * 2 // 3):08d}"
        shape = rng.randrange(10)
        if shape == 0:
            lines.append(f'"Multi\nline {i}",{phone},"a ""quoted""\r\nnote"\n')
        elif shape == 1:
            lines.append(f'Stray {i} 12" TV,{phone},x\n')
        elif shape == 2:
            lines.append(f"Ragged {i},{phone}\n")
        elif shape == 3:
            lines.append(",,\n")
        elif shape == 4 and i % 7 == 0:
            lines.append(f'Open {i},"{phone},never closed\n')
        elif shape == 5:
            lines.append(f"Bad {i},12{i},\n")
        else:
            lines.append(f"Lead {i},{phone},=1+{i}\r\n")
    return "".join(lines)


def outline(results: list[Lead | Reject]) -> list[tuple[object, ...]]:
    return [
        (r.line, r.code, r.message)
        if isinstance(r, Reject)
        else (r.line, r.contact, r.name, tuple(r.fields.items()))
        for r in results
    ]


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 7])
def test_chunks_split_like_one_read(tmp_path: Path, chunk_lines: int) -> None:
    path = tmp_path / "tricky.csv"
    path.write_text(tricky_csv(300), encoding="utf-8")
    whole = outline(list(parse_leads(path, ParseOptions())))
    lead_file = open_leads(path, ParseOptions(), chunk_lines=chunk_lines)
    parse = lead_file.parser.parse
    chunked = [
        r if isinstance(r, Reject) else parse(*r) for r in expand(lead_file.records(), lead_file.format)
    ]
    assert outline(chunked) == whole
    codes = {r[1] for r in whole if isinstance(r[1], str) and not r[1].startswith("+")}
    assert {"ragged_row", "invalid_phone", "malformed_row"} <= codes, codes


def test_ndjson_chunks(tmp_path: Path) -> None:
    path = tmp_path / "leads.ndjson"
    lines = [f'{{"phone": "+55119{80000000 + i:08d}"}}\n' if i % 9 else "{broken\n" for i in range(400)]
    path.write_text("".join(lines), encoding="utf-8")
    whole = outline(list(parse_leads(path, ParseOptions())))
    lead_file = open_leads(path, ParseOptions(), chunk_lines=3)
    parse = lead_file.parser.parse
    chunked = [
        r if isinstance(r, Reject) else parse(*r) for r in expand(lead_file.records(), lead_file.format)
    ]
    assert outline(chunked) == whole and len(whole) == 400


@pytest.mark.parametrize("workers", [0, 2])
def test_parallel_ingest_matches_one_read(
    settings: Settings,
    tmp_path: Path,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    monkeypatch.setattr(pipeline_module, "INLINE_ROWS", 0)  # workers from the first batch
    path = tmp_path / "tricky.csv.gz"
    path.write_bytes(gzip.compress(tricky_csv(3000).encode()))
    expected = list(parse_leads(path, ParseOptions()))
    first_rows: dict[str, Lead] = {}
    for item in expected:
        if isinstance(item, Lead):
            first_rows.setdefault(item.contact, item)
    rejects = [r for r in expected if isinstance(r, Reject)]

    conns = [open_postgres(settings.database.url or "", settings) for _ in range(2)]
    progress: list[Progress] = []
    try:
        ingestor = Ingestor(settings.namespace, conns, redis_client, 100, parsers=workers)
        report = ingestor.ingest([str(path)], ParseOptions(), {}, progress=progress.append)
    finally:
        for conn in conns:
            conn.close()

    assert (report.rows, report.rejected, report.accepted) == (len(expected), len(rejects), len(first_rows))
    assert report.duplicates == len(expected) - len(rejects) - len(first_rows)
    rows = read_rejects(Path(f"{path}.rejects.csv"))[1:]
    assert [(int(r[0]), r[1]) for r in rows] == [(r.line, r.code) for r in rejects]
    recorded = pg.execute(f'SELECT contact, source_line FROM "{settings.namespace}".leads').fetchall()
    assert dict(recorded) == {contact: lead.line for contact, lead in first_rows.items()}
    queued = queued_contacts(pg, redis_client, settings.namespace)
    assert sorted(queued) == sorted(first_rows)
    assert [p.rows for p in progress] == sorted(p.rows for p in progress)
    assert progress[-1].rows == len(expected)
    assert all(p.done is not None and p.size is not None and p.done <= p.size for p in progress)
    assert report.timings.postgres_s > 0 and report.timings.parse_cpu_s > 0


def test_dry_run_counts_like_a_real_run(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "INLINE_ROWS", 0)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(tricky_csv(1000, seed=1), encoding="utf-8")
    second.write_text(tricky_csv(1000, seed=2), encoding="utf-8")
    report = Ingestor(settings.namespace, None, None, 100, dry_run=True, parsers=2).ingest(
        [str(first), str(second)], ParseOptions(), {}
    )
    leads = [x for p in (first, second) for x in parse_leads(p, ParseOptions()) if isinstance(x, Lead)]
    unique = {(lead.channel, lead.contact) for lead in leads}
    in_first = {(x.channel, x.contact) for x in parse_leads(first, ParseOptions()) if isinstance(x, Lead)}
    assert report.accepted == len(unique)
    assert report.duplicates == len(leads) - len(unique)
    assert [f.accepted for f in report.files] == [len(in_first), len(unique - in_first)]
    assert report.rejects_files == []
    assert not (tmp_path / "a.csv.rejects.csv").exists()


def test_distinct_counter_is_exact_and_compact() -> None:
    counter = DistinctCounter()
    keys = [contact_key("sms", f"+55119{80000000 + i:08d}") for i in range(200_000)]
    every, again = b"".join(keys), b"".join(keys[:1000])
    tracemalloc.start()
    counter.add(every)
    counter.add(again)
    assert counter.count() == 200_000
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held / 200_000 < 10  # bytes per key, versus about 60 in a set of ints
    counter.add(b"".join(keys[-10:]) + contact_key("email", "a@example.com"))
    assert counter.count() == 200_001


@pytest.mark.parametrize("notes_header", ["notas", 'no"tas'])
def test_plain_chunks_give_the_lines_of_the_escaping_path(tmp_path: Path, notes_header: str) -> None:
    """A CSV chunk with no control character, quote or backslash skips the per-row NUL checks and
    COPY escaping: its lines must be those the escaping path gives, and chunks holding one still
    escape (as every chunk does when a header name needs escaping)."""
    cells = ["São Paulo", "fim", "x\ty", "ok", "c:\\dir", "ok", "a\x07b", "ok", "\x1b[31m", "ok"]
    body = [f"Lead {i},+55119876500{i:02d},{cell}" for i, cell in enumerate(cells * 2)]
    body[11] = 'Lead 11,+5511987650011,"dito ""assim"""'  # chunks of two rows: one odd cell each
    path = tmp_path / "leads.csv"
    path.write_text("\n".join([f"nome,telefone,{notes_header}", *body]) + "\n", encoding="utf-8")
    lead_file = open_leads(path, ParseOptions(), {}, chunk_lines=2)
    items = list(lead_file.records())
    parser, chunk_format = lead_file.parser, lead_file.format

    parsed = parse_batch(parser, items, chunk_format, 1, False)

    expected = []
    for record in expand(iter(items), chunk_format):
        row = parser.row(*record)
        assert not isinstance(row, Reject)
        expected.append(_copy_line(row, record[0]))
    assert (parsed.parts, parsed.rejects) == (["".join(expected)], [])
    chunks = [item for item in items if isinstance(item, Chunk)]
    assert any(_is_plain(c.text) for c in chunks) and not all(_is_plain(c.text) for c in chunks)
