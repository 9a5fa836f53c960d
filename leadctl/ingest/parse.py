"""From a lead file to a stream of Lead | Reject: open, read, map columns, normalise each row."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
import phonenumbers

from leadctl.errors import InputError, UsageError
from leadctl.ingest.columns import ColumnMap, Layout
from leadctl.ingest.normalise import Invalid, normalise_channel, normalise_email, normalise_phone
from leadctl.ingest.readers import CHUNK_LINES, Chunk, ChunkFormat, Item, Row, expand, read_records
from leadctl.ingest.rejects import Code
from leadctl.ingest.sources import Source, open_source
from leadctl.records import Lead, Reject

_PHONE_CHANNELS = frozenset({"sms", "whatsapp"})
_UNREADABLE = (UnicodeDecodeError, OSError, EOFError, zlib.error)


@dataclass
class ParseOptions:
    """How to read a lead file; None means detect it.

    ``format``: csv, tsv, json or ndjson (else from the extension, .gz included, or sniffed).
    ``delimiter``: else sniffed among , ; TAB |. ``encoding``: else UTF-8, falling back to cp1252.
    ``no_headers`` / ``columns``: the file has no header row; name its columns (else column_1...).
    ``mapping``: source column -> canonical name (phone, email, name, channel, campaign) or a new name.
    ``channel``: for rows without one (else sms when there is a phone, email otherwise).
    ``campaign``: for rows without one (else the file's stem, 'stdin' for -).
    ``region``: where numbers without a country code are from.
    ``consent``: campaign -> lead fields its leads must fill (``compliance.campaigns.<c>.require_consent``).
    """

    format: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    no_headers: bool = False
    columns: list[str] | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    channel: str | None = None
    campaign: str | None = None
    region: str = "BR"
    consent: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class LeadFile:
    """An opened lead file: its body, read lazily in this process as records and Chunks of records
    (split by ``format``), and the ``parser`` that turns one record into a Lead or a Reject. Both
    are picklable, so the Chunks and records can be parsed in another process."""

    source: Source
    columns: list[str]
    parser: RowParser
    format: ChunkFormat | None
    _items: Iterator[Item]

    def records(self) -> Iterator[Item]:
        """Records (line, keys, values), Rejects and Chunks in file order; InputError when the file
        stops being readable."""
        line = 0
        try:
            for item in self._items:
                line = item.first + item.lines - 1 if isinstance(item, Chunk) else _line_of(item)
                yield item
        except _UNREADABLE as exc:
            raise _unreadable(self.source.name, exc, line) from None
        finally:
            self.close()

    def close(self) -> None:
        self.source.closer.close()


def open_leads(
    source: str | Path,
    options: ParseOptions,
    config_columns: dict[str, str] | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> LeadFile:
    """Open ``source`` ('-' for stdin) and read its header; InputError when it is unusable as a whole,
    UsageError for a bad option. The body comes in Chunks of about ``chunk_lines`` lines."""
    region = options.region.upper()
    if not phonenumbers.country_code_for_region(region):
        raise UsageError(f"unknown region {options.region!r} (an ISO country code such as BR)")
    channel = None
    if options.channel:
        channel = normalise_channel(options.channel)
        if channel is None:
            raise UsageError(f"unknown channel {options.channel!r} (known: sms, whatsapp, email)")
    columns = ColumnMap(config_columns, options.mapping)
    opened = open_source(source, options.format, options.encoding)
    try:
        records = read_records(opened, options.delimiter, options.no_headers, options.columns, chunk_lines)
        contacts = columns.layout(records.columns)
        if records.columns and contacts.phone is None and contacts.email is None:
            raise InputError(
                f"{opened.name}: no phone or email column (columns: {', '.join(records.columns)})"
            )
    except _UNREADABLE as exc:
        opened.closer.close()
        raise _unreadable(opened.name, exc, 0) from None
    except BaseException:
        opened.closer.close()
        raise
    parser = RowParser(
        columns,
        region,
        channel,
        options.campaign or opened.stem,
        opened.name,
        options.consent,
        text_cells=records.format is not None and records.format.kind == "csv",
    )
    return LeadFile(opened, records.columns, parser, records.format, records.items)


def parse_leads(
    source: str | Path, options: ParseOptions, config_columns: dict[str, str] | None = None
) -> Iterator[Lead | Reject]:
    """Lead | Reject for every data row of ``source`` ('-' for stdin), in file order.

    Raises InputError now (not on first iteration) when the file as a whole is unusable, and
    UsageError for a bad option; a file that stops being readable half-way raises InputError.
    """
    return _parse(open_leads(source, options, config_columns))


def _parse(lead_file: LeadFile) -> Iterator[Lead | Reject]:
    parse = lead_file.parser.parse
    for record in expand(lead_file.records(), lead_file.format):
        yield record if isinstance(record, Reject) else parse(*record)


def _line_of(record: Row | Reject) -> int:
    return record.line if isinstance(record, Reject) else record[0]


def _unreadable(name: str, error: Exception, line: int) -> InputError:
    """A file that stops being readable: wrong encoding, truncated gzip, I/O error."""
    where = f" after line {line}" if line else ""
    if isinstance(error, UnicodeDecodeError):
        return InputError(
            f"{name}: not valid {error.encoding}{where}; give the file's encoding (e.g. cp1252)"
        )
    return InputError(f"{name}: cannot read{where}: {error}")


def text_of(value: Any) -> str:
    """A cell as stripped text; JSON numbers as their digits, null as empty."""
    if isinstance(value, str):
        return value.strip()
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


LeadRow = tuple[str, str, str, str | None, str | None, str, tuple[str, ...], str]
"""An accepted row as RowParser.row gives it: channel, contact, name, phone, email, campaign,
flags and the other fields as JSON text."""


def _no_values(values: Sequence[Any]) -> tuple[()]:
    return ()


_FIELDS_CACHED = 4096
"""Distinct field values whose JSON a RowParser keeps (a city column repeats; an id column does not)."""


class RowParser:
    """One row (keys and values) -> Lead or Reject.

    ``text_cells``: every value is a str (CSV), so the other fields' JSON can be cached by value.
    """

    def __init__(
        self,
        columns: ColumnMap,
        region: str,
        channel: str | None,
        campaign: str,
        source: str,
        consent: Mapping[str, tuple[str, ...]] | None = None,
        text_cells: bool = False,
    ):
        self._columns = columns
        self._consent = consent or {}
        self._layouts: dict[tuple[str, ...], Layout] = {}
        self._region = region
        self._channel = channel
        self._campaign = campaign
        self._source = source
        self._text_cells = text_cells
        self._text = str.strip if text_cells else text_of
        self._fields_json: dict[object, str] = {}
        self._keyed: Layout | None = None
        self._field_values: Callable[[Sequence[Any]], object] = _no_values

    def parse(self, line: int, keys: tuple[str, ...], values: Sequence[Any]) -> Lead | Reject:
        row = self.row(line, keys, values)
        if row.__class__ is Reject:
            return row  # type: ignore[return-value]
        channel, contact, name, phone, email, campaign, flags, _ = row
        return Lead(
            channel=channel,
            contact=contact,
            name=name,
            campaign=campaign,
            line=line,
            phone=phone,
            email=email,
            fields={column: values[index] for index, column in self._layouts[keys].fields},
            flags=flags,
        )

    def constant_text(self, keys: tuple[str, ...]) -> str:
        """What every row of ``keys`` carries besides its cells: the default campaign and the
        names of its other fields."""
        layout = self._layouts.get(keys)
        if layout is None:
            layout = self._layouts[keys] = self._columns.layout(keys)
        return self._campaign + "".join(name for _, name in layout.fields)

    def row(self, line: int, keys: tuple[str, ...], values: Sequence[Any]) -> LeadRow | Reject:
        """The row as a LeadRow (what the bulk path stores), or a Reject."""
        layout = self._layouts.get(keys)
        if layout is None:
            layout = self._layouts[keys] = self._columns.layout(keys)
        text = self._text
        phone_raw = text(values[layout.phone]) if layout.phone is not None else ""
        email_raw = text(values[layout.email]) if layout.email is not None else ""
        channel = self._channel
        if layout.channel is not None:
            channel_raw = text(values[layout.channel])
            if channel_raw:
                channel = normalise_channel(channel_raw)
                if channel is None:
                    message = f"unknown channel {channel_raw!r} (known: sms, whatsapp, email)"
                    return self.reject(line, Code.UNKNOWN_CHANNEL, message, keys, values)
        if channel is None:
            if not phone_raw and not email_raw:
                return self.reject(
                    line, Code.MISSING_CONTACT, "the row has no phone and no email", keys, values
                )
            channel = "sms" if phone_raw else "email"

        flags: tuple[str, ...] = ()
        phone = email = None
        if phone_raw:
            result = normalise_phone(phone_raw, self._region)
            if result.__class__ is Invalid:
                if channel in _PHONE_CHANNELS:
                    return self.reject(line, Code.INVALID_PHONE, result[0], keys, values)
                flags = ("invalid_phone",)
            else:
                phone, landline, repaired = result
                if landline and channel in _PHONE_CHANNELS:
                    message = f"{phone} is a landline; it cannot receive {channel}"
                    return self.reject(line, Code.LANDLINE, message, keys, values)
                if repaired:
                    flags = ("added_ninth_digit",)
        if email_raw:
            result = normalise_email(email_raw)
            if result.__class__ is Invalid:
                if channel == "email":
                    return self.reject(line, Code.INVALID_EMAIL, f"email: {result[0]}", keys, values)
                flags = (*flags, "invalid_email")
            else:
                email = result  # type: ignore[assignment]
        contact = email if channel == "email" else phone
        if contact is None:
            wanted = "an email" if channel == "email" else "a phone"
            return self.reject(
                line, Code.MISSING_CONTACT, f"{channel} needs {wanted}; the row has none", keys, values
            )

        campaign = (text(values[layout.campaign]) if layout.campaign is not None else "") or self._campaign
        # consent (compliance.campaigns.<c>.require_consent): a campaign may demand proof fields
        required = self._consent.get(campaign)
        if required:
            fields = {name: values[index] for index, name in layout.fields}
            missing = [name for name in required if not text_of(fields.get(name))]
            if missing:
                message = f"campaign {campaign!r} requires consent: {', '.join(missing)} is empty"
                return self.reject(line, Code.NO_CONSENT, message, keys, values)
        name = text(values[layout.name]) if layout.name is not None else ""
        return channel, contact, name, phone, email, campaign, flags, self._fields(layout, values)

    def _fields(self, layout: Layout, values: Sequence[Any]) -> str:
        """The other fields of a row as JSON text (cached by their values for text cells)."""
        if not self._text_cells:
            return orjson.dumps({name: values[index] for index, name in layout.fields}).decode()
        if layout is not self._keyed:  # one header per CSV file: built once
            indices = [index for index, _ in layout.fields]
            self._field_values = itemgetter(*indices) if indices else _no_values
            self._keyed = layout
        key = self._field_values(values)
        cached = self._fields_json.get(key)
        if cached is None:
            cached = orjson.dumps({name: values[index] for index, name in layout.fields}).decode()
            if len(self._fields_json) >= _FIELDS_CACHED:
                self._fields_json.clear()
            self._fields_json[key] = cached
        return cached

    def reject(
        self, line: int, code: str, message: str, keys: tuple[str, ...], values: Sequence[Any]
    ) -> Reject:
        """The row as a Reject: its line, a Code, a message and its original fields."""
        return Reject(line, code, message, dict(zip(keys, values, strict=True)), self._source)
