"""The `leadctl` command line: options and rendering only; the work is done by the library modules.

Exit codes: 0 success; 1 the job ran but some leads failed or were rejected; 2 usage or input
error (bad file, bad option, bad config); 3 a dependency is unreachable (Redis, PostgreSQL).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import orjson
import psycopg
import redis
import typer
from rich.console import Console
from rich.table import Table

from leadctl import __version__
from leadctl.config import CHANNELS, Settings, load_settings
from leadctl.connections import Endpoints, open_postgres, open_redis, postgres_unreachable, redis_unreachable
from leadctl.errors import DependencyError, LeadctlError, UsageError

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

err = Console(stderr=True)
log = logging.getLogger("leadctl")


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
            from leadctl.connections import resolve_endpoints

            self._endpoints = resolve_endpoints(self.settings, lambda line: err.print(line, highlight=False))
        return self._endpoints

    def say(self, message: str) -> None:
        """Human output: to stderr, hidden by --quiet."""
        if not self.quiet:
            err.print(message, highlight=False)


def _state(ctx: typer.Context) -> AppState:
    return ctx.ensure_object(AppState)


def _print_json(data: object) -> None:
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


# -- ingest ----------------------------------------------------------------------------------------


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[
        list[str], typer.Argument(help="Lead files (CSV, TSV, JSON, NDJSON, optionally .gz); - for stdin.")
    ],
    channel: Annotated[
        str | None, typer.Option(help="Channel for rows that name none: sms, whatsapp, email.")
    ] = None,
    campaign: Annotated[str | None, typer.Option(help="Campaign tag (default: the file's name).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, tsv, json or ndjson (default: from the extension).")
    ] = None,
    nl: Annotated[
        bool, typer.Option("--nl", help="Newline-delimited JSON (same as --format ndjson).")
    ] = False,
    delimiter: Annotated[
        str | None, typer.Option(help="CSV delimiter (default: sniffed among , ; tab |).")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Input encoding (default: UTF-8, else CP1252).")
    ] = None,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help="The CSV has no header row; see --columns.")
    ] = False,
    columns: Annotated[
        str | None, typer.Option(help="Column names for --no-headers, comma-separated.")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="Map a column to a lead field, e.g. --map telefone=phone."),
    ] = None,
    rejects: Annotated[Path | None, typer.Option(help="Rejects file (default: <input>.rejects.csv).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Validate, normalise, de-duplicate and queue lead files. Exit 1 when rows were rejected."""
    from leadctl.ingest import ParseOptions
    from leadctl.ingest.pipeline import Ingestor

    state = _state(ctx)
    settings = state.settings
    if channel is not None and channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    pairs: dict[str, str] = {}
    for item in mapping or []:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise UsageError(f"--map takes COLUMN=FIELD, not {item!r}")
        pairs[source] = target
    options = ParseOptions(
        format="ndjson" if nl else fmt,
        delimiter=delimiter,
        encoding=encoding,
        no_headers=no_headers,
        columns=[c.strip() for c in columns.split(",")] if columns else None,
        mapping=pairs,
        channel=channel,
        campaign=campaign,
        region=settings.default_region,
    )
    conn = redis_client = None
    if not dry_run:
        endpoints = state.endpoints
        redis_client = open_redis(endpoints.redis_url, settings)
        conn = open_postgres(endpoints.database_url, settings)
    ingestor = Ingestor(settings.namespace, conn, redis_client, settings.ingest.batch_size, dry_run=dry_run)
    report = ingestor.ingest(files, options, settings.ingest.columns, rejects)
    if as_json:
        _print_json(report.as_json())
    else:
        state.say(
            f"{report.rows:,} rows: {report.accepted:,} accepted, {report.rejected:,} rejected, "
            f"{report.duplicates:,} duplicates, {report.suppressed:,} suppressed "
            f"in {report.seconds:.2f}s" + (" (dry run: nothing written)" if dry_run else "")
        )
        for path in report.rejects_files:
            state.say(f"rejected rows with their reasons: {path}")
    raise typer.Exit(1 if report.rejected else 0)


# -- work ------------------------------------------------------------------------------------------


@app.command()
def work(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="Channel to send: sms, whatsapp or email.")],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: channels.<ch>.workers).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Sends in flight per worker.")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue and its pending list are empty.")
    ] = False,
    max_leads: Annotated[int | None, typer.Option(min=1, help="Stop after this many leads.")] = None,
    name: Annotated[str | None, typer.Option(help="This host's name in the consumer group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Send queued leads of a channel with N worker processes. Exit 1 when some leads were not sent."""
    from leadctl.pool import Supervisor

    state = _state(ctx)
    settings = state.settings
    if channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    endpoints = state.endpoints
    open_redis(endpoints.redis_url, settings).close()
    open_postgres(endpoints.database_url, settings).close()
    channel_settings = settings.channel(channel)
    supervisor = Supervisor(
        settings,
        endpoints,
        channel,
        workers or channel_settings.workers,
        concurrency or channel_settings.concurrency,
        burst=burst,
        max_leads=max_leads,
        name=name,
    )
    state.say(f"{channel}: {supervisor.workers} workers x {supervisor.concurrency} in flight")
    report = supervisor.run()
    if report.fatal:
        raise DependencyError(f"{channel}: {report.fatal}")
    statuses = dict(report.statuses)
    rate = report.entries / report.seconds * 60 if report.seconds else 0
    if as_json:
        _print_json(
            {
                "channel": channel,
                "statuses": statuses,
                "entries": report.entries,
                "seconds": round(report.seconds, 3),
                "leads_per_min": round(rate),
                "restarts": report.restarts,
            }
        )
    else:
        summary = (
            ", ".join(f"{count:,} {status}" for status, count in sorted(statuses.items()))
            or "nothing to send"
        )
        state.say(f"{channel}: {summary} in {report.seconds:.1f}s ({rate:,.0f} leads/min)")
    unsent = sum(statuses.get(s, 0) for s in ("failed", "dead", "in_doubt"))
    raise typer.Exit(1 if unsent or report.crashed else 0)


@app.command()
def batch(ctx: typer.Context) -> None:
    """The cron job: drain the queues within a time budget (arrives with the workers issue)."""
    raise UsageError(
        "leadctl batch is not implemented yet: run `leadctl work --channel CH --burst` meanwhile"
    )


# -- stats -----------------------------------------------------------------------------------------


@app.command()
def stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Queue depth and delivery outcomes per channel."""
    from leadctl.stats import channel_stats

    state = _state(ctx)
    settings = state.settings
    endpoints = state.endpoints
    redis_client = open_redis(endpoints.redis_url, settings)
    with open_postgres(endpoints.database_url, settings) as conn:
        figures = channel_stats(redis_client, conn, settings.namespace)
    if as_json:
        _print_json({"channels": figures})
        return
    table = Table(title=f"leadctl · namespace {settings.namespace}")
    columns = list(next(iter(figures.values())))
    table.add_column("channel")
    for column in columns:
        table.add_column(column, justify="right")
    for channel, values in figures.items():
        table.add_row(channel, *(f"{values[c]:,}" for c in columns))
    Console().print(table)


# -- sandbox, services, demo -----------------------------------------------------------------------


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8990,
    latency_ms: Annotated[float, typer.Option(help="Median answer latency.")] = 0.0,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="Fraction answered 500.")] = 0.0,
    rate_limit: Annotated[float | None, typer.Option(help="Requests/s before answering 429.")] = None,
    timeout_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Fraction accepted but never answered.")
    ] = 0.0,
) -> None:
    """Run a local fake provider speaking Twilio's wire format, for trying leadctl without an account."""
    from leadctl.providers.sandbox import run_sandbox

    run_sandbox(
        host,
        port,
        latency_ms=latency_ms,
        error_rate=error_rate,
        rate_limit=rate_limit,
        timeout_rate=timeout_rate,
    )


@services_app.command("status")
def services_status(ctx: typer.Context) -> None:
    """Show the embedded servers."""
    from leadctl.services import embedded_status

    for status in embedded_status(_state(ctx).settings.data_dir):
        state = "running" if status.running else "stopped"
        typer.echo(f"{status.name:<11} {state:<8} {status.url or '-'}  (data: {status.data_dir})")


@services_app.command("stop")
def services_stop(ctx: typer.Context) -> None:
    """Stop the embedded servers (their data stays on disk)."""
    from leadctl.services import stop_embedded

    stopped = stop_embedded(_state(ctx).settings.data_dir)
    typer.echo(
        ", ".join(s.name for s in stopped) + " stopped" if stopped else "no embedded server was running"
    )


@app.command()
def demo(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option(help="Lead file to send.")] = Path("examples/leads.csv"),
    workers: Annotated[int, typer.Option(min=1, help="Worker processes per channel.")] = 2,
) -> None:
    """Ingest a lead file and send it through the local sandbox provider, end to end."""
    from leadctl.demo import run_demo

    state = _state(ctx)
    raise typer.Exit(run_demo(state.settings, state.endpoints, file, workers, state.say))


# -- entry point -----------------------------------------------------------------------------------


def main() -> None:
    """Run the CLI, turning every known failure into one line on stderr and its exit code."""
    verbose = any(arg in ("-v", "-vv", "--verbose") for arg in sys.argv[1:])
    try:
        app()
    except LeadctlError as exc:
        _fail(exc, exc.exit_code, verbose)
    except redis.RedisError as exc:
        _fail(redis_unreachable("(configured Redis)", exc), 3, verbose)
    except psycopg.OperationalError as exc:
        _fail(postgres_unreachable("(configured PostgreSQL)", exc), 3, verbose)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        _fail(exc, 1, verbose, prefix="internal error: ")


def _fail(exc: BaseException, code: int, verbose: bool, prefix: str = "") -> None:
    if verbose:
        err.print_exception()
    message = str(exc) if isinstance(exc, LeadctlError | DependencyError) else f"{type(exc).__name__}: {exc}"
    err.print(f"error: {prefix}{message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)
