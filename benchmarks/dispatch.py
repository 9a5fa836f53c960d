"""Dispatch benchmark, as `leadctl bench dispatch`.

Usage: python benchmarks/dispatch.py [LEADS] [WORKERS] [CONCURRENCY]
"""

from __future__ import annotations

import sys

import orjson

from leadctl.config import load_settings
from leadctl.connections import resolve_endpoints
from leadctl.dispatch_bench import run_dispatch_bench, save_result


def main() -> None:
    args = [int(a) for a in sys.argv[1:4]]
    settings = load_settings()
    endpoints = resolve_endpoints(settings, lambda line: print(line, file=sys.stderr))
    result = run_dispatch_bench(settings, endpoints, *args)
    save_result(result, settings.data_dir)
    print(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
