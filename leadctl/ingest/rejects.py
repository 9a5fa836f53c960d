"""Reject codes, and the rejects CSV a user opens in a spreadsheet, fixes and ingests again."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import orjson

from leadctl.records import Reject


class Code:
    """Stable reason codes of rejected rows (scripts match on them): plain strings, not an Enum, so
    they serialise the same everywhere (JSON, CSV, PostgreSQL)."""

    RAGGED_ROW = "ragged_row"
    UNTERMINATED_QUOTE = "unterminated_quote"
    MALFORMED_ROW = "malformed_row"
    FIELD_TOO_LARGE = "field_too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_CONTACT = "missing_contact"
    INVALID_PHONE = "invalid_phone"
    INVALID_EMAIL = "invalid_email"
    LANDLINE = "landline"
    UNKNOWN_CHANNEL = "unknown_channel"
    INVALID_CHARACTER = "invalid_character"
    NO_CONSENT = "no_consent"


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """Prefix ' to a cell a spreadsheet would run as a formula ('=HYPERLINK(...)', '+55...', '@SUM'),
    also behind leading whitespace that spreadsheets skip (space, LF, NBSP, ...: ' =cmd')."""
    runs_as_formula = value.startswith(_FORMULA_STARTS) or value.lstrip().startswith(_FORMULA_STARTS)
    return "'" + value if runs_as_formula else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_cell(value)
    if isinstance(value, dict | list):
        return safe_cell(orjson.dumps(value).decode())
    return safe_cell(str(value))


class RejectsWriter:
    """Write rejects to ``path`` as CSV: line, reason_code, message, then the row's original fields.

    The file (UTF-8 with a BOM, so Excel shows accents) is created on the first reject only. Its
    header is ``columns`` when given, else the keys of the first reject's row (none when that row
    could not be split into fields). Fields under other keys follow in order; ragged rows and broken
    JSON lines are written as they were. Every cell is formula-neutralised.
    """

    def __init__(self, path: str | Path, columns: Sequence[str] | None = None):
        self.path = Path(path)
        self.count = 0
        self._columns = list(columns) if columns is not None else None
        self._file: TextIO | None = None
        self._writer: Any = None

    def write(self, reject: Reject) -> None:
        """Append one reject, creating the file on the first."""
        raw = reject.raw
        if self._columns is None:
            self._columns = list(raw) if isinstance(raw, dict) else []
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "reason_code", "message", *map(_cell, self._columns)])
        if isinstance(raw, dict):
            values = [raw.get(column) for column in self._columns]
            values += [value for key, value in raw.items() if key not in self._columns]
        elif isinstance(raw, list):
            values = raw
        else:
            values = [raw]
        self._writer.writerow([reject.line, reject.code, _cell(reject.message), *map(_cell, values)])
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
