"""Every benchmark in one place: `leadctl bench ingest` and `leadctl bench dispatch` (ingest.py, dispatch.py),
and the scripts run as ``python -m leadctl.bench.NAME``: cluster (single Redis against Redis Cluster),
ratelimit (the shared limit held across processes), ingest_postgres (PostgreSQL's part of ingest),
metrics_overhead (counters on and off). Each works in a namespace of its own and drops it.
Benchmarks measure; they are never tests, and tests never time anything.
"""
