"""`leadctl prune`: retention of finished leads and their deliveries in PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from leadctl.commands.app import PEOPLE, app, print_json, state_of
from leadctl.commands.options import DryRun, JsonOutput
from leadctl.errors import UsageError
from leadctl.ops.prune import parse_age, prune_namespace


@app.command(rich_help_panel=PEOPLE)
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", metavar="AGE", help="Age like 90d, 12w, 36h or 30m.")
    ],
    dry_run: DryRun = False,
    batch_size: Annotated[
        int, typer.Option(metavar="N", min=1, help="Leads deleted per transaction.")
    ] = 10_000,
    as_json: JsonOutput = False,
) -> None:
    """Delete the leads whose delivery finished more than AGE ago, with their deliveries, in batches.

    Finished: sent, failed, dead, in doubt or suppressed. Queued and sending leads stay, and so does
    the suppression list. A pruned contact is new again: ingesting it later queues it again. With
    --dry-run it counts what would go. Run it from cron (daily) on one host.
    """

    state = state_of(ctx)
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = prune_namespace(state.settings, state.endpoints, age, batch_size=batch_size, dry_run=dry_run)
    if as_json:
        print_json(report.as_json())
        return
    total = sum(report.leads.values())
    per_channel = ", ".join(f"{channel} {count:,}" for channel, count in sorted(report.leads.items()))
    verb = "would prune" if dry_run else "pruned"
    state.say(
        f"{verb} {total:,} leads finished before {report.cutoff:%Y-%m-%d %H:%M} UTC"
        + (f" ({per_channel})" if per_channel else "")
        + ("" if dry_run else f" in {report.batches} batches, {report.seconds:.1f}s")
    )
