"""`leadctl suppress`: the contacts ingest never queues (add, remove, list, import a file)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import PEOPLE, AppState, Leadctl, app, print_json, state_of
from leadctl.commands.options import (
    ContactsArgument,
    Delimiter,
    InputEncoding,
    InputFormat,
    JsonOutput,
    Reason,
    SuppressionChannel,
)
from leadctl.config import CHANNELS
from leadctl.errors import UsageError
from leadctl.ingest import ParseOptions
from leadctl.ingest.suppressions import (
    Suppressed,
    suppress_contacts,
    suppress_file,
    suppressions,
    unsuppress_contacts,
)
from leadctl.store.suppressions import ALL_CHANNELS

suppress_app = Leadctl(
    help="The suppression list: contacts (phones, emails) ingest records as suppressed and never queues."
)
app.add_typer(suppress_app, name="suppress", rich_help_panel=PEOPLE)


def _channel(value: str | None) -> str | None:
    """'all' -> the entry for every channel, a channel name -> itself, None -> None."""

    if value is None:
        return None
    if value == "all":
        return ALL_CHANNELS
    if value not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)} or all, not {value!r}")
    return value


def _added(state: AppState, as_json: bool, done: Suppressed, channel: str, **extra: object) -> None:
    if as_json:
        print_json({"added": done.added, "already": done.already, "channel": channel, **extra})
    else:
        already = f" ({done.already:,} already were)" if done.already else ""
        state.say(f"suppressed {done.added:,} contacts on {channel} channel(s){already}")


@suppress_app.command("add")
def add(
    ctx: typer.Context,
    contacts: ContactsArgument,
    channel: SuppressionChannel = "all",
    reason: Reason = "",
    as_json: JsonOutput = False,
) -> None:
    """Suppress contacts: ingest counts them as suppressed and never queues them."""

    state = state_of(ctx)
    settings = state.settings
    chosen = _channel(channel or "all")
    assert chosen is not None
    done = suppress_contacts(settings, state.endpoints, contacts, chosen, reason)
    _added(state, as_json, done, channel or "all")


@suppress_app.command("remove")
def remove(
    ctx: typer.Context,
    contacts: ContactsArgument,
    channel: SuppressionChannel = None,
    as_json: JsonOutput = False,
) -> None:
    """Take contacts off the suppression list (leads already recorded as suppressed stay so).

    Without --channel, every entry of each contact goes.
    """

    state = state_of(ctx)
    settings = state.settings
    removed = unsuppress_contacts(settings, state.endpoints, contacts, _channel(channel))
    if as_json:
        print_json({"removed": removed})
    else:
        state.say(f"removed {removed:,} suppression entries")


@suppress_app.command("list")
def list_(
    ctx: typer.Context,
    channel: SuppressionChannel = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Show the newest N entries.")] = 1000,
    as_json: JsonOutput = False,
) -> None:
    """The suppression list, newest first (only the entries on --channel when given)."""

    state = state_of(ctx)
    settings = state.settings
    total, entries = suppressions(settings, state.endpoints, _channel(channel), limit)
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
        typer.Argument(
            metavar="FILE",
            help="A lead file (any format ingest reads) or a list, one per line; - for stdin.",
            show_default=False,
        ),
    ],
    channel: SuppressionChannel = "all",
    reason: Reason = "",
    fmt: InputFormat = None,
    encoding: InputEncoding = None,
    delimiter: Delimiter = None,
    as_json: JsonOutput = False,
) -> None:
    """Suppress every phone and email of a file. Exit 1 when some values were not valid contacts."""

    state = state_of(ctx)
    settings = state.settings
    chosen = _channel(channel or "all")
    assert chosen is not None
    options = ParseOptions(format=fmt, encoding=encoding, delimiter=delimiter)
    done = suppress_file(settings, state.endpoints, file, chosen, reason, options)
    invalid = [{"line": r.line, "reason_code": r.code, "message": r.message} for r in done.invalid]
    _added(state, as_json, done, channel or "all", invalid=invalid)
    if not as_json:
        for problem in invalid[:20]:
            state.say(f"line {problem['line']}: {problem['message']}")
    raise typer.Exit(1 if invalid else 0)
