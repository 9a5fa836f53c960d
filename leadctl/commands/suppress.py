"""`leadctl suppress`: the contacts ingest never queues (add, remove, list, import a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import AppState, app, print_json, state_of
from leadctl.config import CHANNELS
from leadctl.connections import open_postgres
from leadctl.errors import InputError, UsageError
from leadctl.masking import mask_contact

suppress_app = typer.Typer(
    help="The suppression list: contacts (phones, emails) ingest records as suppressed and never queues."
)
app.add_typer(suppress_app, name="suppress")

ChannelOption = Annotated[
    str, typer.Option("--channel", help="sms, whatsapp, email, or all (every channel).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]


def _channel(value: str | None) -> str | None:
    """'all' -> '*', a channel name -> itself, None -> None."""
    from leadctl.store.suppressions import ALL_CHANNELS

    if value is None:
        return None
    if value == "all":
        return ALL_CHANNELS
    if value not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)} or all, not {value!r}")
    return value


def _normalised(values: list[str], region: str, channel: str | None) -> list[str]:
    """Contacts as ingest stores them; UsageError on the first that is not a valid phone or email."""
    from leadctl.ingest.normalise import Invalid, normalise_contact

    contacts = []
    for value in values:
        result = normalise_contact(value, region)
        if isinstance(result, Invalid):
            kind = "email: " if "@" in value else ""
            raise UsageError(f"{mask_contact(value.strip())}: {kind}{result.message}")
        if channel not in (None, "*") and ("@" in result) != (channel == "email"):
            raise UsageError(f"{mask_contact(result)} cannot be suppressed on {channel}")
        contacts.append(result)
    return contacts


def _connect(state: AppState) -> psycopg.Connection:
    return open_postgres(state.endpoints.database_url, state.settings)


@suppress_app.command("add")
def add(
    ctx: typer.Context,
    contacts: Annotated[list[str], typer.Argument(help="Phones and emails, as typed.")],
    channel: ChannelOption = "all",
    reason: Annotated[str, typer.Option(help="Why (e.g. 'opt-out by SMS reply').")] = "",
    as_json: JsonOption = False,
) -> None:
    """Suppress contacts: ingest counts them as suppressed and never queues them."""
    from leadctl.store.suppressions import SuppressionList

    state = state_of(ctx)
    chosen = _channel(channel)
    assert chosen is not None
    normal = _normalised(contacts, state.settings.default_region, chosen)
    with _connect(state) as conn:
        added = SuppressionList(state.settings.namespace).add(conn, [(c, chosen) for c in normal], reason)
    _added(state, as_json, added, len(set(normal)), channel)


def _added(state: AppState, as_json: bool, added: int, distinct: int, channel: str, **extra: object) -> None:
    if as_json:
        print_json({"added": added, "already": distinct - added, "channel": channel, **extra})
    else:
        already = f" ({distinct - added:,} already were)" if distinct > added else ""
        state.say(f"suppressed {added:,} contacts on {channel} channel(s){already}")


@suppress_app.command("remove")
def remove(
    ctx: typer.Context,
    contacts: Annotated[list[str], typer.Argument(help="Phones and emails, as typed.")],
    channel: Annotated[
        str | None,
        typer.Option(
            "--channel", help="Only this entry: sms, whatsapp, email or all (default: every entry)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Take contacts off the suppression list (leads already recorded as suppressed stay so)."""
    from leadctl.store.suppressions import SuppressionList

    state = state_of(ctx)
    chosen = _channel(channel)
    normal = _normalised(contacts, state.settings.default_region, None)
    with _connect(state) as conn:
        removed = SuppressionList(state.settings.namespace).remove(conn, normal, chosen)
    if as_json:
        print_json({"removed": removed})
    else:
        state.say(f"removed {removed:,} suppression entries")


@suppress_app.command("list")
def list_(
    ctx: typer.Context,
    channel: Annotated[
        str | None, typer.Option("--channel", help="Only entries on sms, whatsapp, email or all.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the newest N entries.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """The suppression list, newest first."""
    from leadctl.store.suppressions import SuppressionList

    state = state_of(ctx)
    with _connect(state) as conn:
        total, entries = SuppressionList(state.settings.namespace).entries(conn, _channel(channel), limit)
    rows = [
        {
            "contact": e.contact,
            "channel": "all" if e.channel == "*" else e.channel,
            "reason": e.reason,
            "created_at": e.created_at.isoformat(),
        }
        for e in entries
    ]
    if as_json:
        print_json({"count": total, "suppressions": rows})
        return
    table = Table(
        title=f"suppressed contacts: {total:,}" + (f" (newest {len(rows):,})" if total > len(rows) else "")
    )
    for column in ("contact", "channel", "reason", "created_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("contact", "channel", "reason", "created_at")))
    Console().print(table)


@suppress_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(help="A lead file (any format ingest reads) or a list, one per line; - for stdin."),
    ],
    channel: ChannelOption = "all",
    reason: Annotated[str, typer.Option(help="Why (e.g. 'unsubscribed via CRM').")] = "",
    fmt: Annotated[str | None, typer.Option("--format", help="csv, tsv, json or ndjson.")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Input encoding (default: UTF-8, else CP1252).")
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Suppress every phone and email of a file. Exit 1 when some values were not valid contacts."""
    from leadctl.ingest import ParseOptions
    from leadctl.ingest.contacts import Contact, read_contacts
    from leadctl.store.suppressions import SuppressionList

    state = state_of(ctx)
    settings = state.settings
    chosen = _channel(channel)
    assert chosen is not None
    options = ParseOptions(format=fmt, encoding=encoding, delimiter=delimiter, region=settings.default_region)
    if file != "-" and not Path(file).exists():
        raise InputError(f"{file}: no such file")
    entries: list[tuple[str, str]] = []
    invalid: list[dict[str, object]] = []
    for item in read_contacts(file, options, settings.ingest.columns):
        if isinstance(item, Contact):
            if chosen == "*" or (item.kind == "email") == (chosen == "email"):
                entries.append((item.contact, chosen))
        else:
            invalid.append({"line": item.line, "reason_code": item.code, "message": item.message})
    with _connect(state) as conn:
        added = SuppressionList(settings.namespace).add(conn, entries, reason)
    distinct = len(set(entries))
    _added(state, as_json, added, distinct, channel, invalid=invalid)
    if not as_json:
        for problem in invalid[:20]:
            state.say(f"line {problem['line']}: {problem['message']}")
    raise typer.Exit(1 if invalid else 0)
