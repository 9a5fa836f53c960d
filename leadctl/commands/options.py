"""The options and arguments many commands share, each defined once, and the parsers of their values.

Every command declares them by alias (``as_json: JsonOutput = False``), as sqlite-utils shares its
option decorators, so one option reads and behaves the same everywhere. Each value option shows a
placeholder naming what it takes (``CHANNEL``, ``N``); a flag shows none, since it takes no value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadctl.config import CHANNELS
from leadctl.errors import UsageError

GLOBAL_PANEL = "Global options"
"""Where --config, --verbose and --quiet are listed in every command's help."""

# -- global options: accepted before the subcommand and after it -------------------------------

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="PATH",
        help="Config file (default: $LEADCTL_CONFIG, else ./leadctl.yaml).",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="More logging, and the traceback of an error; -vv for debug.",
        rich_help_panel=GLOBAL_PANEL,
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Only errors and --json output.", rich_help_panel=GLOBAL_PANEL),
]

# -- output -------------------------------------------------------------------------------------

JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout, and nothing else.")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count what would be done; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

# -- channels and campaigns --------------------------------------------------------------------

_CHANNELS_HELP = "sms, whatsapp, email or all; repeatable."
Channels = Annotated[list[str], typer.Option("--channel", metavar="CHANNEL", help=_CHANNELS_HELP)]
"""Channels to act on, required."""
ChannelsOrAll = Annotated[
    list[str] | None, typer.Option("--channel", metavar="CHANNEL", help=f"{_CHANNELS_HELP} Default: all.")
]
"""Channels to act on, every channel when left out."""
LeadChannel = Annotated[
    str | None,
    typer.Option(
        "--channel", metavar="CHANNEL", help="Channel for rows that name none: sms, whatsapp, email."
    ),
]
SuppressionChannel = Annotated[
    str | None,
    typer.Option(
        "--channel", metavar="CHANNEL", help="sms, whatsapp, email, or all (the entry for every channel)."
    ),
]
CampaignTag = Annotated[
    str | None, typer.Option("--campaign", metavar="NAME", help="Campaign tag (default: the file's name).")
]
Campaigns = Annotated[
    list[str] | None,
    typer.Option(
        "--campaign",
        metavar="NAME",
        help="Send only this campaign's leads (repeatable); the others stay queued, untouched.",
    ),
]

# -- workers -----------------------------------------------------------------------------------

WorkersPerChannel = Annotated[
    int | None,
    typer.Option(
        "--workers", metavar="N", min=1, help="Worker processes per channel (default: `channels.CH.workers`)."
    ),
]
SendsInFlight = Annotated[
    int | None,
    typer.Option(
        "--concurrency", metavar="N", min=1, help="Sends in flight per worker (default: the channel's)."
    ),
]
ConsumerName = Annotated[
    str | None,
    typer.Option(
        "--name", metavar="NAME", help="This host's name in the consumer group (default: hostname)."
    ),
]

# -- input files -------------------------------------------------------------------------------

InputFormat = Annotated[
    str | None,
    typer.Option(
        "--format", metavar="FORMAT", help="csv, tsv, json or ndjson (default: from the extension)."
    ),
]
InputEncoding = Annotated[
    str | None,
    typer.Option("--encoding", metavar="ENCODING", help="Input encoding (default: UTF-8, else CP1252)."),
]
Delimiter = Annotated[
    str | None,
    typer.Option("--delimiter", metavar="CHAR", help="CSV delimiter (default: sniffed among , ; tab |)."),
]

# -- people and leads ----------------------------------------------------------------------------

ContactArgument = Annotated[
    str, typer.Argument(metavar="CONTACT", help="The person's phone or email, as typed.", show_default=False)
]
ContactsArgument = Annotated[
    list[str], typer.Argument(metavar="CONTACT", help="Phones and emails, as typed.", show_default=False)
]
Reason = Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (e.g. 'opt-out by SMS reply').")]
LeadIds = Annotated[
    list[str] | None,
    typer.Option("--lead", metavar="ID", help="Lead id (repeatable, or comma-separated)."),
]
EveryLead = Annotated[bool, typer.Option("--all", help="Every lead in doubt on the channel(s).")]
OldestFirst = Annotated[
    int | None, typer.Option("--limit", metavar="N", min=1, help="At most N per channel, oldest first.")
]


# -- parsers -------------------------------------------------------------------------------------


def channels(values: list[str] | None) -> list[str]:
    """Repeated --channel values as channel names, in order, ``all`` (or none given) for every channel."""
    chosen: list[str] = []
    for value in values or ["all"]:
        for name in CHANNELS if value == "all" else (value,):
            if name not in CHANNELS:
                raise UsageError(f"--channel must be one of {', '.join(CHANNELS)} or all, not {value!r}")
            if name not in chosen:
                chosen.append(name)
    return chosen


def lead_channel(value: str | None) -> str | None:
    """The --channel of ingest: one channel name, or None."""
    if value is not None and value not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {value!r}")
    return value


def lead_ids(values: list[str] | None) -> list[int] | None:
    """--lead values (repeated or comma-separated) as ids; None when none was given."""
    if not values:
        return None
    ids = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit():
                raise UsageError(f"--lead takes lead ids (numbers), not {part.strip()!r}")
            ids.append(int(part))
    return ids


def chosen_leads(values: list[str] | None, every: bool) -> list[int] | None:
    """The leads a resend or resolve acts on: the --lead ids, or None for --all (one of them is needed)."""
    ids = lead_ids(values)
    if (ids is None) == (not every):
        raise UsageError("choose the leads: --lead ID (repeatable) or --all")
    return ids
