"""What a dispatch benchmark measured, kept in the data directory for `leadctl plan`.

`leadctl bench dispatch` (leadctl.bench.dispatch) writes it; the capacity plan (leadctl.ops.plan) sizes a
fleet from it, so that the plan rests on this machine's figures rather than on guesses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(slots=True)
class DispatchBenchResult:
    leads: int
    workers: int
    concurrency: int
    leads_per_min: float
    raw_ceiling_per_min: float
    ratio: float
    latency_p50_ms: float
    latency_p99_ms: float
    worker_peak_rss_mb: float
    redis_commands_per_lead: float
    sent: int
    duplicates_at_provider: int
    cpus: int = 0
    """CPUs of the machine that ran it: workers beyond these share cores."""
    redis_masters: int = 1
    partitions: int = 1
    redis_cpu_us_per_lead: float = 0.0
    """Redis CPU (every primary, user + system) to queue, read, acknowledge and count one lead."""
    postgres_wal_bytes_per_lead: float = 0.0
    """WAL written to record, claim and finish one lead (the whole server's WAL over the run)."""
    postgres_bytes_per_lead: float = 0.0
    """Size of the leads and deliveries tables with their indexes, per lead."""
    worker_cpu_us_per_lead: float = 0.0
    """CPU (user + system) of the worker processes per lead sent."""
    sandbox_cpu_us_per_lead: float = 0.0
    """CPU of the sandbox provider per lead, while the workers sent."""
    postgres_cpu_us_per_lead: float = 0.0
    """CPU of every PostgreSQL process of the machine per lead, while the workers sent."""
    raw_client_cpu_us_per_lead: float = 0.0
    """CPU of the raw senders per message: the HTTP client's own cost."""
    raw_sandbox_cpu_us_per_lead: float = 0.0
    """CPU of the sandbox per message of the raw run."""

    def as_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @property
    def leads_per_min_per_core(self) -> float:
        """What one worker process sends per minute with a core to itself (sends cost CPU only here:
        the sandbox answers at once)."""
        return self.leads_per_min / max(1, min(self.workers, self.cpus or self.workers))


def result_path(data_dir: Path) -> Path:
    return data_dir / "bench" / "dispatch.json"


def save_result(result: DispatchBenchResult, data_dir: Path) -> Path:
    """Keep the latest run's figures for `leadctl plan`."""
    path = result_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2))
    return path


def load_result(data_dir: Path) -> DispatchBenchResult | None:
    """The latest saved run, if any (None also when the file is unreadable or of another version)."""
    try:
        return DispatchBenchResult(**orjson.loads(result_path(data_dir).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None
