"""`leadctl dlq`, `leadctl doubt` and `leadctl requeue`: what an operator does with leads set aside."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadctl.commands.app import RECOVER, Leadctl, app, print_json, state_of
from leadctl.commands.options import (
    ChannelsOrAll,
    EveryLead,
    JsonOutput,
    LeadIds,
    OldestFirst,
    Yes,
    channels,
    chosen_leads,
    lead_ids,
)
from leadctl.errors import UsageError
from leadctl.masking import mask_contact
from leadctl.ops.recovery import Recovery

dlq_app = Leadctl(
    help="Dead letters: leads that failed every attempt (or could not be sent at all), with their reason."
)
app.add_typer(dlq_app, name="dlq", rich_help_panel=RECOVER)
doubt_app = Leadctl(
    help="Leads in doubt: the request may have reached the provider but no answer came. leadctl never "
    "resends them by itself; you decide."
)
app.add_typer(doubt_app, name="doubt", rich_help_panel=RECOVER)


def _confirm(yes: bool, question: str) -> None:
    """Go on with --yes or an interactive yes; stop otherwise (exit 2 when nobody can be asked)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Pass --yes to confirm.")
    if not typer.confirm(question, err=True):
        raise typer.Exit(1)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    """A table on stdout; its last column (the error text) wraps. Piped, it is not cut to 80 columns."""
    console = Console()
    if not rows:
        console.print(title)
        return
    if not console.is_terminal:
        console.width = max(console.width, 160)
    table = Table(title=title)
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("lead", "attempts") else "left",
            no_wrap=column != columns[-1],
        )
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


# -- dlq ---------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context, channel: ChannelsOrAll = None, limit: OldestFirst = 100, as_json: JsonOutput = False
) -> None:
    """Dead letters with their lead, masked contact, reason, attempts and when they went dead."""

    state = state_of(ctx)
    chosen = channels(channel)
    with Recovery(state.settings, state.endpoints) as recovery:
        found = recovery.dead_letters(chosen, limit)
    if as_json:
        print_json(found.as_json())
        return
    shown = f" (oldest {len(found.letters):,} shown)" if len(found.letters) < found.total else ""
    _table(
        f"dead letters: {found.total:,}{shown}",
        ("lead", "channel", "contact", "attempts", "status", "dead at (UTC)", "reason"),
        [
            (
                d.lead_id if d.lead_id is not None else "-",
                d.channel,
                mask_contact(d.contact) if d.contact else "-",
                d.attempts,
                d.status,
                _when(d.dead_at),
                d.reason,
            )
            for d in found.letters
        ],
    )


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context, channel: ChannelsOrAll = None, limit: OldestFirst = None, as_json: JsonOutput = False
) -> None:
    """Queue the dead letters' leads again and remove the dead letters.

    Each lead goes back to `queued` and to its channel's stream, with a fresh retry budget
    (`channels.CH.max_attempts`); its `attempts` column keeps counting every request ever made. A
    lead sent (or otherwise finished) since is not queued: its dead letter is just removed. Dead
    letters naming no known lead are kept (purge them). Safe to run twice.
    """

    state = state_of(ctx)
    chosen = channels(channel)
    with Recovery(state.settings, state.endpoints) as recovery:
        results = recovery.replay(chosen, limit)
    replayed = sum(r.replayed for r in results.values())
    skipped = sum(r.skipped for r in results.values())
    kept = sum(r.kept for r in results.values())
    if as_json:
        print_json(
            {
                "replayed": replayed,
                "skipped": skipped,
                "kept": kept,
                "channels": {
                    ch: {"replayed": r.replayed, "skipped": r.skipped, "kept": r.kept}
                    for ch, r in results.items()
                },
            }
        )
        return
    state.say(
        f"replayed {replayed:,} dead letters; {skipped:,} were already finished (removed), "
        f"{kept:,} name no known lead (kept: `leadctl dlq purge` removes them)"
    )


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    channel: ChannelsOrAll = None,
    limit: OldestFirst = None,
    yes: Yes = False,
    as_json: JsonOutput = False,
) -> None:
    """Remove dead letters for good (oldest first); their leads stay `dead` in PostgreSQL.

    Asks for confirmation unless --yes.
    """

    state = state_of(ctx)
    chosen = channels(channel)
    which = "the oldest " + str(limit) if limit else "every"
    _confirm(yes, f"Remove {which} dead letter of {', '.join(channel or ['all'])}?")
    with Recovery(state.settings, state.endpoints) as recovery:
        purged = recovery.purge(chosen, limit)
    if as_json:
        print_json({"purged": sum(purged.values()), "channels": purged})
    else:
        state.say(f"purged {sum(purged.values()):,} dead letters")


# -- doubt -------------------------------------------------------------------------------------


@doubt_app.command("list")
def doubt_list(
    ctx: typer.Context,
    channel: ChannelsOrAll = None,
    lead: LeadIds = None,
    limit: OldestFirst = 100,
    as_json: JsonOutput = False,
) -> None:
    """Leads in doubt: their provider, the error, and since when."""

    state = state_of(ctx)
    chosen, ids = channels(channel), lead_ids(lead)
    with Recovery(state.settings, state.endpoints) as recovery:
        total, leads = recovery.in_doubt(chosen, ids, limit)
    if as_json:
        print_json({"total": total, "in_doubt": [d.as_json() for d in leads]})
        return
    shown = f" (oldest {len(leads):,} shown)" if len(leads) < total else ""
    _table(
        f"leads in doubt: {total:,}{shown}",
        ("lead", "channel", "contact", "provider", "attempts", "since (UTC)", "error"),
        [
            (
                d.lead_id,
                d.channel,
                mask_contact(d.contact),
                d.provider,
                d.attempts,
                _when(d.since),
                ": ".join(part for part in (d.error_code, d.error) if part),
            )
            for d in leads
        ],
    )


@doubt_app.command("resend")
def doubt_resend(
    ctx: typer.Context,
    channel: ChannelsOrAll = None,
    lead: LeadIds = None,
    every: EveryLead = False,
    yes: Yes = False,
    as_json: JsonOutput = False,
) -> None:
    """Send leads in doubt again, knowing the contact may get the message TWICE.

    The first request may have been delivered. Asks for confirmation unless --yes. The leads go back
    to `queued` and to their channel's stream; a running `leadctl work` sends them. Leads not in
    doubt (any more) are left alone.
    """

    state = state_of(ctx)
    chosen, ids = channels(channel), chosen_leads(lead, every)
    with Recovery(state.settings, state.endpoints) as recovery:
        if not yes:
            total, _ = recovery.in_doubt(chosen, ids, limit=0)
            _confirm(False, f"Resend {total:,} leads in doubt? Some may receive the message twice.")
        changed = recovery.resend(chosen, ids)
    if as_json:
        print_json({"resent": changed.count, "lead_ids": changed.lead_ids, "skipped": changed.skipped})
        return
    state.say(f"queued {changed.count:,} leads in doubt again")
    if changed.skipped:
        state.say(f"not in doubt, left alone: {', '.join(map(str, changed.skipped[:20]))}")


@doubt_app.command("resolve")
def doubt_resolve(
    ctx: typer.Context,
    verdict: Annotated[
        str, typer.Option("--as", metavar="VERDICT", help="sent or failed: what you know happened.")
    ],
    channel: ChannelsOrAll = None,
    lead: LeadIds = None,
    every: EveryLead = False,
    note: Annotated[str, typer.Option(metavar="TEXT", help="Why (kept in the lead's error_message).")] = "",
    as_json: JsonOutput = False,
) -> None:
    """Record your verdict on leads in doubt (e.g. after checking the provider's logs); nothing is sent.

    The lead's status becomes the verdict, its error_code `operator`, and its error_message the
    verdict, your note and the original error.
    """

    if verdict not in ("sent", "failed"):
        raise UsageError(f"--as must be sent or failed, not {verdict!r}")
    state = state_of(ctx)
    chosen, ids = channels(channel), chosen_leads(lead, every)
    with Recovery(state.settings, state.endpoints) as recovery:
        changed = recovery.resolve(chosen, ids, verdict, note)
    if as_json:
        print_json(
            {
                "resolved": changed.count,
                "as": verdict,
                "lead_ids": changed.lead_ids,
                "skipped": changed.skipped,
            }
        )
        return
    state.say(f"resolved {changed.count:,} leads in doubt as {verdict}")
    if changed.skipped:
        state.say(f"not in doubt, left alone: {', '.join(map(str, changed.skipped[:20]))}")


# -- requeue -----------------------------------------------------------------------------------


@app.command(rich_help_panel=RECOVER)
def requeue(ctx: typer.Context, channel: ChannelsOrAll = None, as_json: JsonOutput = False) -> None:
    """Rebuild the queues from PostgreSQL: append every `queued` lead missing from its stream.

    For when Redis lost its data, or a crash came between PostgreSQL's commit and the queueing.
    Safe to run any time, even while workers run: a lead never gets a second entry because of it,
    except one queued at that very moment (and a second entry sends nothing twice).
    """

    state = state_of(ctx)
    chosen = channels(channel)
    with Recovery(state.settings, state.endpoints) as recovery:
        results = recovery.requeue(chosen)
    appended = sum(r.appended for r in results.values())
    if as_json:
        print_json(
            {
                "appended": appended,
                "channels": {
                    ch: {"queued": r.queued, "in_stream": r.in_stream, "appended": r.appended}
                    for ch, r in results.items()
                },
            }
        )
        return
    for ch, r in results.items():
        if r.queued:
            state.say(
                f"{ch}: {r.queued:,} queued, {r.in_stream:,} of them in the stream, {r.appended:,} appended"
            )
    state.say(f"appended {appended:,} leads to their streams")
