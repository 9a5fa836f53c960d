"""Read an opened Source as records: CSV/TSV rows, a JSON array's objects, NDJSON lines.

Each record comes with the physical line it starts on (header = line 1; a JSON array's records are
numbered from 1), its keys and its values. Rows that cannot be read (ragged, a quote never closed,
a field over the size limit, broken JSON) come as Rejects so the rest of the file still loads.

The body of a CSV or NDJSON file is read here as Chunks: runs of whole physical lines cut only at
record boundaries (a line holding a quote is followed to the end of its record), so that splitting a
chunk into records (``split_chunk``) can run in another process and give exactly what reading the
file in one go gives.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from leadctl.errors import InputError, UsageError
from leadctl.ingest.rejects import Code
from leadctl.ingest.sources import Source, lead_list
from leadctl.records import Reject

FIELD_LIMIT = 32 << 20
DELIMITERS = (",", ";", "\t", "|")
NDJSON_PEEK = 100
CHUNK_LINES = 1000
_SNIFF_ROWS = 20

Row = tuple[int, tuple[str, ...], Sequence[Any]]
"""A record: the line it starts on, its keys, its values (in key order)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """``lines`` physical lines of a CSV or NDJSON file from line ``first`` on, whole records only."""

    first: int
    lines: int
    text: str


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """How a file's Chunks split into records: ``kind`` csv (with its delimiter and header) or ndjson."""

    kind: str
    name: str
    delimiter: str = ","
    header: tuple[str, ...] = ()


Item = Row | Reject | Chunk


@dataclass(slots=True)
class Records:
    """The columns a file declares (CSV header, or the keys of its first JSON records) and its body:
    records and Chunks of records, in file order (``format`` says how to split the Chunks)."""

    columns: list[str]
    items: Iterator[Item]
    format: ChunkFormat | None = None

    @property
    def rows(self) -> Iterator[Row | Reject]:
        """The records, Chunks split here."""
        return expand(self.items, self.format)


def expand(items: Iterable[Item], format: ChunkFormat | None) -> Iterator[Row | Reject]:
    """Records and Chunks -> records."""
    for item in items:
        if isinstance(item, Chunk):
            assert format is not None
            yield from split_chunk(format, item)
        else:
            yield item


def read_records(
    source: Source,
    delimiter: str | None = None,
    no_headers: bool = False,
    names: Sequence[str] | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> Records:
    """Records of ``source``; the header (or the first NDJSON lines) is read now, the rest lazily in
    Chunks of about ``chunk_lines`` lines."""
    if source.format == "json":
        return _json(source)
    if source.format == "ndjson":
        return _ndjson(source, chunk_lines)
    if delimiter is None:
        delimiter = "\t" if source.format == "tsv" else sniff_delimiter(source.sample)
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise UsageError(f"the delimiter must be one character, not {delimiter!r}")
    return _csv(source, delimiter, no_headers, names, chunk_lines)


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


def _csv(
    source: Source, delimiter: str, no_headers: bool, names: Sequence[str] | None, chunk_lines: int
) -> Records:
    items = _csv_chunks(source.text, delimiter, source.name, chunk_lines)
    first = _first_record(items, delimiter, source.name)
    if first is None:
        raise InputError(f"{source.name}: the file is empty")
    opening: list[Row | Reject] = []
    if no_headers:
        width = len(names) if names else len(first[1]) if not isinstance(first, Reject) else 0
        header = _clean_header(names or [f"column_{i}" for i in range(1, width + 1)])
        opening = list(_checked_width([first], header, source.name))
    elif isinstance(first, Reject):
        raise InputError(f"{source.name} line {first.line}: cannot read the header: {first.message}")
    else:
        header = _clean_header(first[1])
    format = ChunkFormat("csv", source.name, delimiter, header)
    return Records(list(header), itertools.chain(opening, items), format)


def _first_record(
    items: Iterator[Chunk | Reject], delimiter: str, name: str
) -> tuple[int, list[str]] | Reject | None:
    """The first record of a CSV file (its header, unless it has none); None when there is none."""
    for item in items:
        if isinstance(item, Reject):
            return item
        record = next(_physical_records(_lines(item.text), delimiter, name, item.first - 1), None)
        if record is not None:
            return record
    return None


def _lines(text: str) -> io.StringIO:
    """A text's physical lines, split as a file opened with newline='' splits them."""
    return io.StringIO(text, newline="")


def split_chunk(format: ChunkFormat, chunk: Chunk) -> Iterator[Row | Reject]:
    """The records of one Chunk, exactly as reading the whole file would give them."""
    if format.kind == "ndjson":
        yield from _ndjson_rows(_lines(chunk.text), chunk.first, format.name)
        return
    csv.field_size_limit(FIELD_LIMIT)
    header, width = format.header, len(format.header)
    if '"' not in chunk.text and len(chunk.text) <= FIELD_LIMIT:
        # One record per line, and no quotes: splitting on the delimiter is what the csv module does.
        delimiter = format.delimiter
        if "\r" in chunk.text:
            lines: Iterable[str] = (text.rstrip("\r\n") for text in _lines(chunk.text))
        else:  # the same physical lines, split at once
            lines = chunk.text.split("\n")
            if lines[-1] == "":
                lines.pop()
        line = chunk.first
        for text in lines:
            fields = text.split(delimiter)
            if len(fields) == width:
                if any(fields):
                    yield line, header, fields
            elif any(fields):
                yield _ragged(line, fields, width, format.name)
            line += 1
        return
    records = _physical_records(_lines(chunk.text), format.delimiter, format.name, chunk.first - 1)
    yield from _checked_width(records, header, format.name)


class _Lines:
    """An iterable of lines that takes lines back: iterating again (even from inside an iteration)
    continues where the last one stopped, given-back lines first."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self._back: list[str] = []  # the next lines, last first

    def __iter__(self) -> Iterator[str]:
        back = self._back
        for line in self._lines:
            if not back:
                yield line
                continue
            back.insert(0, line)  # behind the lines given back, and held by no iteration
            while back:
                yield back.pop()
        while back:
            yield back.pop()

    def give_back(self, lines: list[str]) -> None:
        self._back.extend(reversed(lines))


def _csv_chunks(text: Iterable[str], delimiter: str, name: str, size: int) -> Iterator[Chunk | Reject]:
    """A CSV file's lines as Chunks of about ``size`` lines cut between records, the first record
    alone in the first Chunk. A record the csv module refuses becomes a Reject for its first line
    (between Chunks), and reading resumes on the next line."""
    lines = _Lines(text)
    buffer: list[str] = []
    start = 1  # the line number of buffer[0]
    seen_record = False
    try:
        for line in lines:
            if '"' in line:
                taken: list[str] = []
                reader = csv.reader(_following(line, lines, taken), delimiter=delimiter, strict=True)
                try:
                    fields = next(reader)
                except csv.Error as exc:
                    lines.give_back(taken)
                    number = start + len(buffer)
                    if buffer:
                        yield Chunk(start, len(buffer), "".join(buffer))
                        buffer = []
                    yield Reject(number, *_csv_problem(str(exc)), line.rstrip("\r\n"), name)
                    start = number + 1
                    seen_record = True
                    continue
                buffer.append(line)
                buffer.extend(taken)
                blank = not any(fields)
            elif seen_record:
                buffer.append(line)
                if len(buffer) < size:
                    continue
                blank = False
            else:
                buffer.append(line)
                blank = not line.rstrip("\r\n").replace(delimiter, "")
            if (not seen_record and not blank) or len(buffer) >= size:
                seen_record = True
                yield Chunk(start, len(buffer), "".join(buffer))
                start += len(buffer)
                buffer = []
    except Exception:  # the file stopped being readable: the lines read before come first
        if buffer:
            yield Chunk(start, len(buffer), "".join(buffer))
        raise
    if buffer:
        yield Chunk(start, len(buffer), "".join(buffer))


def _following(line: str, lines: Iterator[str], taken: list[str]) -> Iterator[str]:
    """``line``, then as many of ``lines`` as a reader asks for (kept in ``taken``)."""
    yield line
    for more in lines:
        taken.append(more)
        yield more


def _ragged(line: int, fields: list[str], width: int, name: str) -> Reject:
    return Reject(line, Code.RAGGED_ROW, f"{len(fields)} fields where the header has {width}", fields, name)


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
            yield _ragged(line, fields, width, name)


def _physical_records(
    text: Iterable[str], delimiter: str, name: str, offset: int = 0
) -> Iterator[tuple[int, list[str]] | Reject]:
    """Non-blank CSV records with the line each starts on (``offset`` lines before the first); a
    record the csv module refuses becomes a Reject for its first line, and reading resumes on the
    next line."""
    lines: Iterator[str] = iter(text)
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
            yield Reject(start, *_csv_problem(str(exc)), pending[0].rstrip("\r\n") if pending else None, name)
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


def _ndjson(source: Source, chunk_lines: int) -> Records:
    lines = iter(source.text)
    opening = list(_ndjson_rows(itertools.islice(lines, NDJSON_PEEK), 1, source.name))
    found = [row for row in opening if not isinstance(row, Reject)]
    broken = [row for row in opening if isinstance(row, Reject)]
    if broken and not found:
        raise InputError(f"{source.name} line {broken[0].line}: not JSON lines: {broken[0].message}")
    columns = list(dict.fromkeys(key for _, keys, _ in found for key in keys))
    rest = _line_chunks(lines, NDJSON_PEEK + 1, chunk_lines)
    return Records(columns, itertools.chain(opening, rest), ChunkFormat("ndjson", source.name))


def _line_chunks(lines: Iterator[str], first: int, size: int) -> Iterator[Chunk]:
    """Lines as Chunks of ``size``; if reading fails, the lines read before it come first."""
    buffer: list[str] = []
    try:
        for line in lines:
            buffer.append(line)
            if len(buffer) >= size:
                yield Chunk(first, len(buffer), "".join(buffer))
                first += len(buffer)
                buffer = []
    except Exception:
        if buffer:
            yield Chunk(first, len(buffer), "".join(buffer))
        raise
    if buffer:
        yield Chunk(first, len(buffer), "".join(buffer))


def _ndjson_rows(lines: Iterable[str], first: int, name: str) -> Iterator[Row | Reject]:
    for line, text in enumerate(lines, first):
        if not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Reject(line, Code.INVALID_JSON, f"invalid JSON: {exc}", text.rstrip("\r\n"), name)
            continue
        if isinstance(value, dict):
            yield line, tuple(value), tuple(value.values())
        else:
            yield Reject(
                line, Code.NOT_AN_OBJECT, "line is JSON but not an object", text.rstrip("\r\n"), name
            )
