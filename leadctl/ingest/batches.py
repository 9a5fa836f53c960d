"""One batch of raw records -> what the store needs: COPY data per writer, rejects, counts.

``parse_batch`` is what a parse process runs (or the main process, for small inputs): its
arguments and its result are small picklable objects, and the accepted leads leave it as lines of
PostgreSQL's COPY text format, not as one Python object each. A lead goes to the writer chosen by a
hash of its contact, so every occurrence of a contact is written by the same writer, in file order.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zlib import crc32

import orjson

from leadctl.ingest.parse import LeadRow, RowParser
from leadctl.ingest.readers import Chunk, ChunkFormat, Item, split_chunk
from leadctl.ingest.rejects import Code
from leadctl.records import Reject

_NUL = "a field holds a NUL character, which PostgreSQL cannot store"
_NULL = "\\N"
_TABS = 7  # separators of a COPY line of store.leads.COPY_COLUMNS


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
    leads' contact keys. The rows of a plain CSV chunk (``_UNPLAIN``) need no NUL check and no
    COPY escaping: their lines are built directly."""
    lines_of: list[list[str]] = [[] for _ in range(parts)]
    rejects: list[Reject] = []
    flags: Counter[str] = Counter()
    keys: list[bytes] = []
    started = time.thread_time()
    row_of = parser.row
    rows = 0
    plain_rows = (
        format is not None and format.kind == "csv" and _is_plain(parser.constant_text(format.header))
    )
    for item in items:
        plain = plain_rows and isinstance(item, Chunk) and _is_plain(item.text)
        for record in split_chunk(format, item) if isinstance(item, Chunk) else (item,):
            rows += 1
            if isinstance(record, Reject):
                rejects.append(record)
                continue
            row = row_of(*record)
            if isinstance(row, Reject):
                rejects.append(row)
                continue
            channel, contact, name, phone, email, campaign, lead_flags, fields = row
            if not plain and (
                "\x00" in name
                or "\x00" in campaign
                or ("\\u0000" in fields and _has_nul(orjson.loads(fields)))
            ):
                rejects.append(parser.reject(record[0], Code.INVALID_CHARACTER, _NUL, record[1], record[2]))
                continue
            if parts:
                part = crc32(contact.encode()) % parts if parts > 1 else 0
                lines_of[part].append(
                    f"{channel}\t{contact}\t{name}\t{phone or _NULL}\t{email or _NULL}\t"
                    f"{fields}\t{campaign}\t{record[0]}\n"
                    if plain
                    else _copy_line(row, record[0])
                )
            if lead_flags:
                flags.update(lead_flags)
            if with_keys:
                keys.append(contact_key(channel, contact))
    texts = ["".join(lines) for lines in lines_of]
    counts = [len(lines) for lines in lines_of]
    cpu_s = time.thread_time() - started
    return ParsedBatch(rows, rejects, texts, counts, flags, b"".join(keys), cpu_s)


_UNPLAIN = re.compile(r'[\x00-\x09\x0b-\x1f"\\]')
"""What a CSV chunk must not hold for its rows to need no check and no escaping: NUL and the other
control characters but newline (JSON and COPY escape them), quotes (JSON escapes them; a quoted
field may also hold a newline) and backslashes (both escape them)."""


def _is_plain(text: str) -> bool:
    return _UNPLAIN.search(text) is None


def _copy_line(row: LeadRow, line: int) -> str:
    """An accepted row as one line of COPY's text format (tab-separated, \\N for NULL, escapes)."""
    channel, contact, name, phone, email, campaign, _, fields = row
    text = f"{channel}\t{contact}\t{name}\t{phone or _NULL}\t{email or _NULL}\t{fields}\t{campaign}\t{line}\n"
    if text.count("\t") == _TABS and text.count("\n") == 1 and "\\" not in text and "\r" not in text:
        return text
    values = (channel, contact, name, phone, email, fields, campaign)
    return "\t".join(_NULL if v is None else _escape(v) for v in values) + f"\t{line}\n"


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
