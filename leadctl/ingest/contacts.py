"""The contacts of a file, for the suppression list: every phone and email of every row.

Any file ingest reads will do (its phone and email columns are found the same way), and so will a
plain list of phones and emails one per line, with or without a header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from leadctl.errors import InputError
from leadctl.ingest.columns import ColumnMap
from leadctl.ingest.normalise import Invalid, normalise_contact
from leadctl.ingest.parse import ParseOptions, text_of
from leadctl.ingest.readers import read_records
from leadctl.ingest.rejects import Code
from leadctl.ingest.sources import open_source
from leadctl.records import Reject


@dataclass(frozen=True, slots=True)
class Contact:
    line: int
    contact: str
    kind: str
    """phone or email"""


def read_contacts(
    source: str | Path, options: ParseOptions, config_columns: dict[str, str] | None = None
) -> Iterator[Contact | Reject]:
    """Every phone and email in ``source``, normalised, or a Reject saying why one is not valid."""
    opened = open_source(source, options.format, options.encoding)
    try:
        records = read_records(opened, options.delimiter, options.no_headers, options.columns)
        columns = ColumnMap(config_columns, options.mapping)
        layout = columns.layout(records.columns)
        plain = layout.phone is None and layout.email is None
        if plain and len(records.columns) != 1:
            raise InputError(
                f"{opened.name}: no phone or email column (columns: {', '.join(records.columns)})"
            )
        region = options.region.upper()
        if plain and not options.no_headers and opened.format in ("csv", "tsv"):
            first = normalise_contact(records.columns[0], region)
            if not isinstance(first, Invalid):  # no header: the first line is a contact too
                yield Contact(1, first, _kind(first))
        for record in records.rows:
            if isinstance(record, Reject):
                yield record
                continue
            line, keys, values = record
            found = columns.layout(keys)
            slots = [0] if plain else [i for i in (found.phone, found.email) if i is not None]
            for index in slots:
                value = text_of(values[index])
                if value:
                    yield _contact(line, value, region, dict(zip(keys, values, strict=True)), opened.name)
    finally:
        opened.closer.close()


def _kind(contact: str) -> str:
    return "email" if "@" in contact else "phone"


def _contact(line: int, value: str, region: str, raw: dict[str, object], name: str) -> Contact | Reject:
    result = normalise_contact(value, region)
    if isinstance(result, Invalid):
        code = Code.INVALID_EMAIL if "@" in value else Code.INVALID_PHONE
        return Reject(line, code, result.message, raw, name)
    return Contact(line, result, _kind(result))
