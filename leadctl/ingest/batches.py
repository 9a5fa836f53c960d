"""One batch of raw records -> what the store needs: COPY data per writer, rejects, counts.

``parse_batch`` is what a parse worker process runs (or the main process, for small inputs): its
arguments and its result are small picklable objects, and the accepted leads leave it as CSV text
for PostgreSQL's COPY, not as one Python object each. A lead goes to the writer chosen by a hash of
its contact, so every occurrence of a contact is written by the same writer, in file order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadctl.ingest.parse import RowParser
from leadctl.ingest.readers import ChunkFormat, Item, expand
from leadctl.ingest.rejects import Code
from leadctl.leads import Lead, Reject

_NUL = "a field holds a NUL character, which PostgreSQL cannot store"


@dataclass(slots=True)
class ParsedBatch:
    """The outcome of one batch: ``rows`` data rows, of which ``len(rejects)`` were rejected.

    ``parts[i]`` holds ``leads[i]`` leads as CSV rows of store.leads.COPY_COLUMNS for writer i
    (no parts for a dry run). ``keys`` (when asked) is 8 bytes per lead identifying (channel,
    contact). ``cpu_s`` is the CPU time the parsing took.
    """

    rows: int
    rejects: list[Reject]
    parts: list[str]
    leads: list[int]
    flags: Counter[str] = field(default_factory=Counter)
    keys: bytes = b""
    cpu_s: float = 0.0

    @property
    def accepted(self) -> int:
        return self.rows - len(self.rejects)


def contact_key(channel: str, contact: str) -> bytes:
    """8 bytes that stand for (channel, contact) when counting distinct contacts in memory."""
    return hashlib.blake2b(f"{channel}\t{contact}".encode(), digest_size=8).digest()


def parse_batch(
    parser: RowParser, items: list[Item], format: ChunkFormat | None, parts: int, with_keys: bool
) -> ParsedBatch:
    """Parse ``items`` (records, Chunks of records split by ``format``, rows the reader rejected)
    into a ParsedBatch with ``parts`` CSV texts (0: validate only) and, if ``with_keys``, the leads'
    contact keys."""
    rows_of: list[list[tuple[Any, ...]]] = [[] for _ in range(parts)]
    rejects: list[Reject] = []
    flags: Counter[str] = Counter()
    keys: list[bytes] = []
    started = time.thread_time()
    parse = parser.parse
    dumps = orjson.dumps
    rows = 0
    for record in expand(items, format):
        rows += 1
        if isinstance(record, Reject):
            rejects.append(record)
            continue
        lead = parse(*record)
        if lead.__class__ is Reject:
            rejects.append(lead)  # type: ignore[arg-type]
            continue
        assert isinstance(lead, Lead)
        fields = dumps(lead.fields).decode()
        if "\x00" in lead.name or "\x00" in lead.campaign or ("\\u0000" in fields and _has_nul(lead.fields)):
            line, names, values = record
            rejects.append(parser.reject(line, Code.INVALID_CHARACTER, _NUL, names, values))
            continue
        if parts:
            part = zlib.crc32(lead.contact.encode()) % parts if parts > 1 else 0
            rows_of[part].append(
                (
                    lead.channel,
                    lead.contact,
                    lead.name,
                    lead.phone,
                    lead.email,
                    fields,
                    lead.campaign,
                    lead.line,
                )
            )
        if lead.flags:
            flags.update(lead.flags)
        if with_keys:
            keys.append(contact_key(lead.channel, lead.contact))
    texts = [_csv_text(part_rows) for part_rows in rows_of]
    counts = [len(part_rows) for part_rows in rows_of]
    cpu_s = time.thread_time() - started
    return ParsedBatch(rows, rejects, texts, counts, flags, b"".join(keys), cpu_s)


def _csv_text(rows: list[tuple[Any, ...]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character in a string or a key (PostgreSQL refuses both)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False
