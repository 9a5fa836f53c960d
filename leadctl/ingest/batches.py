"""One batch of raw records -> what the store needs: COPY data per writer, rejects, counts.

``parse_batch`` is what a parse worker process runs (or the main process, for small inputs): its
arguments and its result are small picklable objects, and the accepted leads leave it as lines of
PostgreSQL's COPY text format, not as one Python object each. A lead goes to the writer chosen by a
hash of its contact, so every occurrence of a contact is written by the same writer, in file order.
"""

from __future__ import annotations

import hashlib
import re
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
_NULL = "\\N"
_TABS = 7  # separators of a COPY line of store.leads.COPY_COLUMNS
_ESCAPED = re.compile(r"[\\\n\r]")  # what COPY's text format escapes, besides tabs


@dataclass(slots=True)
class ParsedBatch:
    """The outcome of one batch: ``rows`` data rows, of which ``len(rejects)`` were rejected.

    ``parts[i]`` holds ``leads[i]`` leads as COPY text lines of store.leads.COPY_COLUMNS for writer
    i (no parts for a dry run). ``keys`` (when asked) is 8 bytes per lead identifying (channel,
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
    into a ParsedBatch with ``parts`` COPY texts (0: validate only) and, if ``with_keys``, the
    leads' contact keys."""
    lines_of: list[list[str]] = [[] for _ in range(parts)]
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
            lines_of[part].append(_copy_line(lead, fields))
        if lead.flags:
            flags.update(lead.flags)
        if with_keys:
            keys.append(contact_key(lead.channel, lead.contact))
    texts = ["".join(lines) for lines in lines_of]
    counts = [len(lines) for lines in lines_of]
    cpu_s = time.thread_time() - started
    return ParsedBatch(rows, rejects, texts, counts, flags, b"".join(keys), cpu_s)


def _copy_line(lead: Lead, fields: str) -> str:
    """The lead as one line of COPY's text format (tab-separated, \\N for NULL, escapes)."""
    line = (
        f"{lead.channel}\t{lead.contact}\t{lead.name}\t{lead.phone or _NULL}\t{lead.email or _NULL}\t"
        f"{fields}\t{lead.campaign}\t{lead.line}\n"
    )
    if line.count("\t") == _TABS and not _ESCAPED.search(line, 0, len(line) - 1):
        return line
    values = (lead.channel, lead.contact, lead.name, lead.phone, lead.email, fields, lead.campaign)
    return "\t".join(_NULL if v is None else _escape(v) for v in values) + f"\t{lead.line}\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character in a string or a key (PostgreSQL refuses both)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False
