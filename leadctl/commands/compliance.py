"""`leadctl forget`, `leadctl export` (LGPD requests) and `leadctl webhooks serve` (receipts, opt-outs)."""

from __future__ import annotations

from typing import Annotated

import typer

from leadctl.commands.app import PEOPLE, SEND, AppState, Leadctl, app, print_json, state_of
from leadctl.commands.options import ContactArgument, JsonOutput
from leadctl.compliance.erasure import export_contact, forget_contact
from leadctl.errors import UsageError
from leadctl.ingest.normalise import Invalid, normalise_contact
from leadctl.masking import mask_contact
from leadctl.webhooks.server import run

webhooks_app = Leadctl(help="Provider webhooks: delivery receipts, inbound replies, opt-outs.")
app.add_typer(webhooks_app, name="webhooks", rich_help_panel=SEND)


def _person(state: AppState, value: str) -> str:
    """The contact as leadctl stores it (E.164 phone, normalised email); UsageError when it is neither."""

    result = normalise_contact(value, state.settings.default_region)
    if isinstance(result, Invalid):
        raise UsageError(f"{mask_contact(value.strip())}: {result.message}")
    return result


@app.command(rich_help_panel=PEOPLE)
def forget(ctx: typer.Context, contact: ContactArgument, as_json: JsonOutput = False) -> None:
    """Erase a person (phone or email) from PostgreSQL and Redis: an LGPD erasure request.

    Removes their leads, deliveries, queue entries, webhook events and suppression entries. A salted
    hash of the contact stays: a re-import skips them, and they stay suppressed.
    """

    state = state_of(ctx)
    person = _person(state, contact)
    removed = forget_contact(state.settings, state.endpoints, person)
    if as_json:
        print_json({"contact": mask_contact(person), **removed.as_json()})
        return
    counts = ", ".join(
        f"{n:,} {what.replace('_', ' ')}" for what, n in removed.as_json().items() if n is not True
    )
    state.say(
        f"forgot {mask_contact(person)}: removed {counts}; a hashed tombstone keeps them from coming back"
    )


@app.command(rich_help_panel=PEOPLE)
def export(ctx: typer.Context, contact: ContactArgument) -> None:
    """Print everything kept about a person as one JSON object (an LGPD access request)."""

    state = state_of(ctx)
    person = _person(state, contact)
    print_json(export_contact(state.settings, state.endpoints, person))


@webhooks_app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="Address to listen on (default: `webhooks.host`).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", min=0, max=65535, help="Port (default: `webhooks.port`, 8088)."),
    ] = None,
) -> None:
    """Receive delivery receipts and replies from Twilio, WhatsApp Cloud, SendGrid and Zenvia.

    Routes: POST /webhooks/twilio/status and /webhooks/twilio/inbound, GET|POST /webhooks/whatsapp,
    POST /webhooks/sendgrid and /webhooks/zenvia, GET /healthz.

    A request without a valid signature gets 403; an opt-out reply suppresses its sender.
    """

    state = state_of(ctx)
    run(state.settings, state.endpoints, host, port, state.say)
