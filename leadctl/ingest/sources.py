"""Open a lead file ('-' is stdin) as text: undo gzip, pick the encoding and the format, refuse non-text.

Encoding: UTF-8 (with or without BOM) when the first MiB decodes as UTF-8, UTF-16 with a BOM,
else cp1252 (Brazilian Excel). A later byte that is not UTF-8 in a UTF-8 file is read as cp1252
rather than failing the whole file half-way.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from leadctl.errors import InputError, UsageError

SAMPLE_BYTES = 1 << 20
FORMATS = ("csv", "tsv", "json", "ndjson")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_SPREADSHEETS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx (zip), .xls (OLE)
_FALLBACK = "leadctl-cp1252-fallback"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("cp1252", errors="replace"), error.end


codecs.register_error(_FALLBACK, _cp1252_fallback)


@dataclass(slots=True)
class Source:
    """An opened lead file: its name for messages, its stem, format, text stream and decoded start.

    ``size`` is the file's size on disk (compressed for .gz; None for a pipe) and ``position()`` how
    many of those bytes were read so far: together they give a progress bar its ETA.
    """

    name: str
    stem: str
    format: str
    text: TextIO
    sample: str
    closer: ExitStack
    size: int | None = None
    position: Callable[[], int] | None = None


class _Rewound(io.RawIOBase):
    """A binary stream whose first bytes were already read: serve them again, then the rest."""

    def __init__(self, head: bytes, rest: io.BufferedIOBase):
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._rest.readinto(buffer)


def open_source(source: str | Path, format: str | None = None, encoding: str | None = None) -> Source:
    """Open ``source`` ('-' for stdin); InputError when it is missing, not a file, binary or empty."""
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
    if encoding is not None:
        given = encoding
        try:
            encoding = codecs.lookup(given).name
            io.TextIOWrapper(io.BytesIO(), encoding=encoding)  # LookupError: not a text encoding (rot13)
        except LookupError:
            raise UsageError(f"unknown text encoding {given!r} (e.g. utf-8, cp1252, latin-1)") from None
    is_stdin = str(source) == "-"
    name = "stdin" if is_stdin else str(source)
    closer = ExitStack()
    try:
        raw = _stdin() if is_stdin else _open_file(source, name, closer)
        size, position = _extent(raw)
        try:
            head = raw.read(SAMPLE_BYTES)
            if head[:2] == b"\x1f\x8b":
                raw = gzip.GzipFile(fileobj=_Rewound(head, raw))
                head = raw.read(SAMPLE_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{name}: cannot read: {exc}") from None
        encoding, errors = _encoding(name, head, encoding)
        sample = head.decode(encoding, errors="replace")
        if not sample.strip():
            raise InputError(f"{name}: the file is empty")
        binary = io.BufferedReader(_Rewound(head, raw))
        text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline="")
        base = Path(name).name.removesuffix(".gz")
        chosen = format or _EXTENSIONS.get(Path(base).suffix.lower()) or _sniff_format(sample)
        return Source(name, Path(base).stem, chosen, text, sample, closer, size, position)
    except BaseException:
        closer.close()
        raise


def _stdin() -> io.BufferedIOBase:
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer if buffer is not None else io.BytesIO(sys.stdin.read().encode())


def _extent(raw: io.BufferedIOBase) -> tuple[int | None, Callable[[], int] | None]:
    """The size and read position of a regular file (stdin redirected from one included)."""
    try:
        info = os.fstat(raw.fileno())
        raw.tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None, None
    if not stat.S_ISREG(info.st_mode):
        return None, None
    size = info.st_size

    def position() -> int:
        try:
            return raw.tell()
        except (OSError, ValueError):  # closed: read to the end
            return size

    return size, position


def _open_file(source: str | Path, name: str, closer: ExitStack) -> io.BufferedIOBase:
    try:
        return closer.enter_context(open(source, "rb"))
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a lead file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror or exc}") from None


def _encoding(name: str, head: bytes, explicit: str | None) -> tuple[str, str]:
    """The text encoding and decode-error policy of a file starting with ``head``."""
    if head.startswith(_SPREADSHEETS):
        raise InputError(f"{name}: is an Excel workbook, not CSV; save it as CSV (or CSV UTF-8) first")
    if explicit is not None and explicit.startswith(("utf-16", "utf-32")):
        return explicit, "strict"
    if explicit is None and head.startswith(_UTF16_BOMS):
        return "utf-16", "strict"
    if b"\x00" in head:
        raise InputError(f"{name}: looks like a binary file (it contains NUL bytes), not CSV or JSON")
    if explicit is not None:
        return explicit, "strict"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < SAMPLE_BYTES)
    except UnicodeDecodeError:
        return "cp1252", "replace"
    return "utf-8-sig", _FALLBACK


def _sniff_format(sample: str) -> str:
    """json, ndjson or csv, from how the text starts (for stdin and unknown extensions)."""
    start = sample.lstrip()
    if start.startswith("["):
        return "json"
    if start.startswith("{"):
        try:
            first = orjson.loads(start.partition("\n")[0])
        except orjson.JSONDecodeError:
            return "json"
        return "json" if lead_list(first) is not None else "ndjson"
    return "csv"


def lead_list(document: object) -> list[object] | None:
    """The records of a JSON document: a list holding objects (or empty), or the one such list an
    object holds ({"leads": [...]}); None when there is no such list."""
    if isinstance(document, list):
        return document if not document or _holds_objects(document) else None
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list) and _holds_objects(value)]
        if len(lists) == 1:
            return lists[0]
    return None


def _holds_objects(items: list[object]) -> bool:
    return any(isinstance(item, dict) for item in items)
