"""Ingest benchmark, as `leadctl bench ingest`, with the previous version measured in the same run.

Usage: python benchmarks/ingest.py [ROWS ...] [--compare REF] [--json]

Generates lead files of ROWS leads (default 100,000 and 1,000,000; 30% of the phones need
normalising, 2% are invalid, 1% are duplicates) and ingests each end to end - parsed, validated,
recorded in PostgreSQL, queued in Redis - first with this checkout's leadctl, then with the leadctl
of git REF (default: the commit before parse workers, the single-process pipeline), extracted with
`git archive` and run on the same venv, servers and files. Each run gets a fresh namespace, dropped
afterwards. Redis and PostgreSQL come from the usual config / LEADCTL_* variables.
"""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from leadctl.config import load_settings
from leadctl.connections import resolve_endpoints
from leadctl.ingest.benchmark import checkout, run_bench

PREVIOUS = "7724359^"
"""The tree just before the parallel ingest pipeline (its first commit is 7724359)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--compare", default=PREVIOUS, help="git commit to compare with ('' for none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    endpoints = resolve_endpoints(settings, lambda line: print(line, file=sys.stderr))
    workdir = (settings.data_dir / "bench").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"LEADCTL_REDIS_URL": endpoints.redis_url, "LEADCTL_DATABASE_URL": endpoints.database_url}
    compared = (args.compare, checkout(args.compare, workdir)) if args.compare else None
    report = run_bench(
        args.rows,
        workdir,
        {**os.environ, **env},
        endpoints.redis_url,
        endpoints.database_url,
        sys.executable,
        compared,
        lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        print(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    for run in report.runs:
        cpu = run.cpu_s
        print(
            f"{run.label:>12} {run.rows:>9,} rows  {run.leads_per_s:>8,.0f} leads/s  {run.seconds:6.2f} s  "
            f"peak RSS {run.peak_rss_mb:5.0f} MB ({run.processes} processes)  "
            f"CPU s leadctl {cpu['leadctl']:.1f} / postgres {cpu['postgres']:.1f} / redis {cpu['redis']:.1f}"
        )
    print(
        "goals:", ", ".join(f"{goal} {'met' if met else 'NOT met'}" for goal, met in report.goals().items())
    )


if __name__ == "__main__":
    main()
