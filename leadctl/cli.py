"""The `leadctl` command line: options and rendering only; the work is done by the library modules.

Exit codes: 0 success; 1 the job ran but some leads failed or were rejected; 2 usage or input
error (bad file, bad option, bad config); 3 a dependency is unreachable (Redis, PostgreSQL).
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import TYPE_CHECKING

import psycopg
import redis

from leadctl.connections import postgres_unreachable, redis_unreachable
from leadctl.errors import DependencyError, LeadctlError

if TYPE_CHECKING:
    import typer

_VERBOSE_FLAGS = re.compile(r"-[qy]*v[vqy]*")
"""-v, -vv, and -v among the other short flags (-q, -y) in one argument."""


COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(("ingest",), "ingest"),
    **dict.fromkeys(("work", "batch", "workers"), "work"),
    **dict.fromkeys(("webhooks", "forget", "export"), "compliance"),
    **dict.fromkeys(("stats",), "stats"),
    **dict.fromkeys(("dlq", "doubt", "requeue"), "recovery"),
    **dict.fromkeys(("suppress",), "suppress"),
    **dict.fromkeys(("prune",), "prune"),
    **dict.fromkeys(("demo", "sandbox", "services"), "local"),
    **dict.fromkeys(("bench",), "bench"),
    **dict.fromkeys(("plan",), "plan"),
}
"""The module of leadctl.commands that registers each command: a command line loads only the module
of its subcommand, and so only the library that subcommand calls (every library at once would
double the start-up time of every command)."""

_GLOBAL_WITH_VALUE = ("--config",)


def subcommand(args: list[str]) -> str | None:
    """The subcommand named in ``args`` (the first argument that is not a global option), if any."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def command_line(args: list[str]) -> typer.Typer:
    """The typer application with the commands ``args`` may run registered: the subcommand's own
    module when ``args`` names a known one, else (help, an unknown name) every command."""
    # imported here, not with this module: worker processes are spawned, and a spawned child runs its
    # parent's main script again, which imports this module; typer, rich and the commands would cost
    # each worker several MB
    from leadctl.commands.app import app

    named = COMMAND_MODULES.get(subcommand(args) or "")
    for module in [named] if named else sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"leadctl.commands.{module}")  # each registers its commands on app
    return app


def main() -> None:
    """Run the CLI, turning every known failure into one line on stderr and its exit code."""
    app = command_line(sys.argv[1:])
    verbose = asks_verbose(sys.argv[1:])
    try:
        app()
    except LeadctlError as exc:
        _fail(exc, exc.exit_code, verbose)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:  # e.g. mid-failover
        _fail(redis_unreachable("(configured Redis)", exc), 3, verbose)
    except psycopg.OperationalError as exc:
        _fail(postgres_unreachable("(configured PostgreSQL)", exc), 3, verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        _fail(exc, 1, verbose, prefix="internal error: ")


def asks_verbose(args: list[str]) -> bool:
    """Whether -v/--verbose is among ``args``, before the subcommand or after it, also as -vv or among
    other short flags (-qv): read from the command line itself, so that it holds for every error."""
    return any(arg == "--verbose" or _VERBOSE_FLAGS.fullmatch(arg) for arg in args)


def _fail(exc: BaseException, code: int, verbose: bool, prefix: str = "") -> None:
    from leadctl.commands.app import err  # loaded by command_line already; see there

    if verbose:
        err.print_exception()
    message = str(exc) if isinstance(exc, LeadctlError | DependencyError) else f"{type(exc).__name__}: {exc}"
    err.print(f"error: {prefix}{message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)
