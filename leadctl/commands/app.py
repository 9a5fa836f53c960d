"""The typer application, its global options, and what every command shares (state, output)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from leadctl import __version__
from leadctl.config import Settings, load_settings
from leadctl.connections import Endpoints
from leadctl.local.services import resolve_endpoints

EXIT_CODES = (
    "Exit codes: 0 success, 1 some leads failed or were rejected, 2 bad input/option/config, "
    "3 Redis or PostgreSQL unreachable."
)

app = typer.Typer(
    name="leadctl",
    help=f"Send a message to every lead in a file: SMS, WhatsApp or email.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
services_app = typer.Typer(help="The embedded Redis and PostgreSQL leadctl runs when none is configured.")
app.add_typer(services_app, name="services")

err = Console(stderr=True, soft_wrap=True)


@dataclass
class AppState:
    """Global options, and the settings and endpoints resolved from them on first use."""

    config: Path | None = None
    verbose: int = 0
    quiet: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _endpoints: Endpoints | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = resolve_endpoints(
                self.settings, lambda line: err.print(line, highlight=False, markup=False)
            )
        return self._endpoints

    def say(self, message: str) -> None:
        """Human output: to stderr, hidden by --quiet."""
        if not self.quiet:
            err.print(message, highlight=False, markup=False)


def state_of(ctx: typer.Context) -> AppState:
    return ctx.ensure_object(AppState)


def print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leadctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file (default: $LEADCTL_CONFIG, else ./leadctl.yaml)."),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging; -vv for debug.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and --json output.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """Global options."""
    ctx.obj = AppState(config=config, verbose=verbose, quiet=quiet)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="leadctl: %(message)s", stream=sys.stderr)
