"""The typer application: its help panels, its global options, and what every command shares.

Every command is registered through ``Leadctl.command``, which gives it the global options
(--config, --verbose/-v, --quiet/-q) after the subcommand too, and the commands' classes below, which
list them in COMMAND_ORDER and show flags without a value placeholder.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from leadctl import __version__
from leadctl.commands.options import ConfigOption, QuietOption, VerboseOption
from leadctl.config import Settings, config_path, load_settings
from leadctl.connections import Endpoints
from leadctl.local.services import resolve_endpoints
from leadctl.masking import mask_url

log = logging.getLogger("leadctl")

EXIT_CODES = (
    "Exit codes: 0 success, 1 some leads failed or were rejected, 2 bad input, option or config, "
    "3 Redis or PostgreSQL unreachable."
)

SEND, WATCH, RECOVER, PEOPLE, LOCAL, MEASURE = "Send", "Watch", "Recover", "People", "Local", "Measure"
PANELS = (SEND, WATCH, RECOVER, PEOPLE, LOCAL, MEASURE)
"""The help's command panels, everyday jobs first."""
COMMAND_ORDER = (
    *("ingest", "work", "batch", "webhooks"),
    *("stats", "workers"),
    *("dlq", "doubt", "requeue"),
    *("suppress", "forget", "export", "prune"),
    *("demo", "sandbox", "services"),
    *("bench", "plan"),
)
"""The order of the commands in `leadctl --help` (typer would list single commands before groups)."""

err = Console(stderr=True, soft_wrap=True)


def _flags_without_placeholder(params: list[Any]) -> None:
    """A flag takes no value, so its help shows no `<bool>`/`<int>` placeholder."""
    for param in params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""


class LeadctlCommand(TyperCommand):
    """A command whose flags, --help included, show no value placeholder."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)
        _flags_without_placeholder(params)
        return params


class LeadctlGroup(TyperGroup):
    """A command group listing its commands in COMMAND_ORDER, its flags without value placeholders."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)
        _flags_without_placeholder(params)
        return params

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


@dataclass
class AppState:
    """Global options, and the settings and endpoints resolved from them on first use."""

    config: Path | None = None
    verbose: int = 0
    quiet: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _endpoints: Endpoints | None = field(default=None, repr=False)

    def take(self, config: Path | None, verbose: int, quiet: bool) -> None:
        """Add global options given after the subcommand to those given before it."""
        if config is not None:
            self.config, self._settings, self._endpoints = config, None, None
        self.verbose += verbose
        self.quiet = self.quiet or quiet
        _configure_logging(self.verbose)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            log.info("config: %s", config_path(self.config, os.environ) or "none (defaults and environment)")
            self._settings = load_settings(self.config)
        return self._settings

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            settings = self.settings
            self._endpoints = resolve_endpoints(
                settings, lambda line: err.print(line, highlight=False, markup=False)
            )
            log.info(
                "namespace %s: Redis at %s, PostgreSQL at %s",
                settings.namespace,
                mask_url(self._endpoints.redis_url),
                mask_url(self._endpoints.database_url),
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


def _configure_logging(verbose: int) -> None:
    logging.basicConfig(format="leadctl: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(
        logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    )


Command = TypeVar("Command", bound=Callable[..., Any])

_GLOBAL_OPTIONS = (
    ("global_config", ConfigOption, None),
    ("global_verbose", VerboseOption, 0),
    ("global_quiet", QuietOption, False),
)
_CONTEXT = "global_ctx"


def with_global_options(command: Command) -> Command:
    """``command`` taking the global options too, so they work after the subcommand: its signature
    gains them (typer reads it), and they are added to the ones given before the subcommand."""
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    own_context = next((p.name for p in params if p.annotation is typer.Context), None)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in _GLOBAL_OPTIONS
    ]
    if own_context is None:
        extra.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        ctx = kwargs[own_context] if own_context else kwargs.pop(_CONTEXT)
        state_of(ctx).take(*(kwargs.pop(name) for name, _, _ in _GLOBAL_OPTIONS))
        return command(**kwargs)

    run.__signature__ = signature.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


class Leadctl(typer.Typer):
    """A typer app (or command group) of leadctl: Markdown help, commands in COMMAND_ORDER, and on
    every command the global options and flags without value placeholders."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=LeadctlGroup, rich_markup_mode="markdown", **kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[Command], Command]:  # type: ignore[override]
        register = super().command(name, cls=LeadctlCommand, **kwargs)

        def decorator(command: Command) -> Command:
            register(with_global_options(command))
            return command

        return decorator


app = Leadctl(
    name="leadctl",
    help=f"Send a message to every lead in a file: SMS, WhatsApp or email.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leadctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: ConfigOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Global options."""
    ctx.obj = AppState(config=config, verbose=verbose, quiet=quiet)
    _configure_logging(verbose)
