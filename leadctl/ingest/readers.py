"""Read an opened Source as records: CSV/TSV rows, a JSON array's objects, NDJSON lines.

Each record comes with the physical line it starts on (header = line 1; a JSON array's records are
numbered from 1), its keys and its values. Rows that cannot be read (ragged, a quote never closed,
a field over the size limit, broken JSON) come as Rejects so the rest of the file still loads.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from leadctl.errors import InputError, UsageError
from leadctl.ingest.rejects import Code
from leadctl.ingest.sources import Source, lead_list
from leadctl.leads import Reject

FIELD_LIMIT = 32 << 20
DELIMITERS = (",", ";", "\t", "|")
NDJSON_PEEK = 100
_SNIFF_ROWS = 20

Row = tuple[int, tuple[str, ...], Sequence[Any]]
"""A record: the line it starts on, its keys, its values (in key order)."""


@dataclass(slots=True)
class Records:
    """The columns a file declares (CSV header, or the keys of its first JSON records) and its rows."""

    columns: list[str]
    rows: Iterator[Row | Reject]


def read_records(
    source: Source, delimiter: str | None = None, no_headers: bool = False, names: Sequence[str] | None = None
) -> Records:
    """Records of ``source``; the header (or the first NDJSON lines) is read now, the rest lazily."""
    if source.format == "json":
        return _json(source)
    if source.format == "ndjson":
        return _ndjson(source)
    if delimiter is None:
        delimiter = "\t" if source.format == "tsv" else sniff_delimiter(source.sample)
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise UsageError(f"the delimiter must be one character, not {delimiter!r}")
    return _csv(source, delimiter, no_headers, names)


def sniff_delimiter(sample: str) -> str:
    """The one of , ; TAB | that splits the sample's first rows most consistently into most columns."""
    text = sample[: sample.rfind("\n") + 1] or sample
    best, best_score = ",", (0, 0)
    for candidate in DELIMITERS:
        rows: list[list[str]] = []
        try:
            for row in csv.reader(text.splitlines(), delimiter=candidate):
                if any(row):
                    rows.append(row)
                if len(rows) > _SNIFF_ROWS:
                    break
        except csv.Error:
            pass
        if not rows or len(rows[0]) < 2:
            continue
        score = (sum(len(row) == len(rows[0]) for row in rows[1:]), len(rows[0]))
        if score > best_score:
            best, best_score = candidate, score
    return best


def _csv(source: Source, delimiter: str, no_headers: bool, names: Sequence[str] | None) -> Records:
    csv.field_size_limit(FIELD_LIMIT)
    records = _physical_records(source, delimiter)
    first = next(records, None)
    if first is None:
        raise InputError(f"{source.name}: the file is empty")
    if no_headers:
        width = len(names) if names else len(first[1]) if not isinstance(first, Reject) else 0
        header = _clean_header(names or [f"column_{i}" for i in range(1, width + 1)])
        records = itertools.chain([first], records)
    elif isinstance(first, Reject):
        raise InputError(f"{source.name} line {first.line}: cannot read the header: {first.message}")
    else:
        header = _clean_header(first[1])
    return Records(list(header), _checked_width(records, header, source.name))


def _checked_width(
    records: Iterable[tuple[int, list[str]] | Reject], header: tuple[str, ...], name: str
) -> Iterator[Row | Reject]:
    width = len(header)
    for record in records:
        if isinstance(record, Reject):
            yield record
            continue
        line, fields = record
        if len(fields) == width:
            yield line, header, fields
        else:
            message = f"{len(fields)} fields where the header has {width}"
            yield Reject(line, Code.RAGGED_ROW, message, fields, name)


def _physical_records(source: Source, delimiter: str) -> Iterator[tuple[int, list[str]] | Reject]:
    """Non-blank CSV records with the line each starts on; a record the csv module refuses becomes a
    Reject for its first line, and reading resumes on the next line."""
    lines: Iterator[str] = iter(source.text)
    offset = 0
    while True:
        pending: list[str] = []
        reader = csv.reader(_remember(lines, pending), delimiter=delimiter, strict=True)
        end = 0
        try:
            for row in reader:
                start = offset + end + 1
                end = reader.line_num
                pending.clear()
                if any(row):
                    yield start, row
            return
        except csv.Error as exc:
            start = offset + end + 1
            yield Reject(
                start, *_csv_problem(str(exc)), pending[0].rstrip("\r\n") if pending else None, source.name
            )
            offset = start
            lines = itertools.chain(pending[1:], lines)


def _remember(lines: Iterator[str], pending: list[str]) -> Iterator[str]:
    """Pass lines through, keeping those of the record being read (to re-read them after an error)."""
    for line in lines:
        pending.append(line)
        yield line


def _csv_problem(error: str) -> tuple[str, str]:
    if "field larger than field limit" in error:
        return (
            Code.FIELD_TOO_LARGE,
            f"a field is longer than {FIELD_LIMIT:,} characters (or a quote is never closed)",
        )
    if "unexpected end of data" in error:
        return Code.UNTERMINATED_QUOTE, "a quoted field starts on this line and is never closed"
    return Code.MALFORMED_ROW, f"malformed CSV: {error}"


def _clean_header(names: Sequence[str]) -> tuple[str, ...]:
    """Strip names, name blank columns column_N, suffix repeated names _2, _3..."""
    seen: set[str] = set()
    header = []
    for index, raw in enumerate(names, 1):
        name = raw.strip() or f"column_{index}"
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        header.append(candidate)
    return tuple(header)


def _json(source: Source) -> Records:
    try:
        document = orjson.loads(source.text.read())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source.name}: invalid JSON: {exc}") from None
    items = lead_list(document)
    if items is None:
        raise InputError(
            f"{source.name}: JSON must be a list of lead objects, or an object holding one such list"
        )
    columns = list(dict.fromkeys(key for item in items if isinstance(item, dict) for key in item))
    return Records(columns, (_json_record(index, item, source.name) for index, item in enumerate(items, 1)))


def _json_record(line: int, item: Any, name: str) -> Row | Reject:
    if isinstance(item, dict):
        return line, tuple(item), tuple(item.values())
    return Reject(line, Code.NOT_AN_OBJECT, "record is not a JSON object", orjson.dumps(item).decode(), name)


def _ndjson(source: Source) -> Records:
    rows = _ndjson_rows(source)
    peeked = list(itertools.islice(rows, NDJSON_PEEK))
    found = [row for row in peeked if not isinstance(row, Reject)]
    broken = [row for row in peeked if isinstance(row, Reject)]
    if broken and not found:
        raise InputError(f"{source.name} line {broken[0].line}: not JSON lines: {broken[0].message}")
    columns = list(dict.fromkeys(key for _, keys, _ in found for key in keys))
    return Records(columns, itertools.chain(peeked, rows))


def _ndjson_rows(source: Source) -> Iterator[Row | Reject]:
    for line, text in enumerate(source.text, 1):
        if not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Reject(line, Code.INVALID_JSON, f"invalid JSON: {exc}", text.rstrip("\r\n"), source.name)
            continue
        if isinstance(value, dict):
            yield line, tuple(value), tuple(value.values())
        else:
            yield Reject(
                line, Code.NOT_AN_OBJECT, "line is JSON but not an object", text.rstrip("\r\n"), source.name
            )
