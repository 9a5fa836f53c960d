"""The ingest benchmark: a large, realistic, reproducible Brazilian lead file, ingested end to end.

``generate_leads`` writes rows ``nome,telefone,email,canal,cidade``: about 70% of the phones are
already E.164, 30% need normalising (Brazilian punctuation, a leading 0 trunk code, old 8-digit
mobiles without the 9th digit), 2% are invalid and 1% of the rows repeat an earlier row's phone
written differently.

``run_ingest`` runs ``leadctl --quiet ingest FILE --json`` as a user would (a subprocess, in a
namespace of its own, dropped afterwards) and samples, every 50 ms, the resident memory of its whole
process tree (parse processes included) and the CPU time of that tree, of its PostgreSQL backends
(found through its sockets) and of Redis (INFO). The leads/s figure is the ingest's own (rows /
seconds from opening the first file to the last write); ``wall_s`` adds interpreter start-up.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psutil
import psycopg
import redis

from leadctl.bench.backends import client_backends
from leadctl.config import Settings
from leadctl.connections import Endpoints
from leadctl.errors import UsageError
from leadctl.local.namespaces import purge_namespace

_AREAS = ("11", "21", "31", "41", "51", "61", "71", "81", "85", "91", "19", "27", "47", "62", "98")
_CITIES = ("São Paulo", "Rio de Janeiro", "Belo Horizonte", "Curitiba", "Porto Alegre", "Brasília", "Recife")
_DOMAINS = ("gmail.com", "hotmail.com", "uol.com.br", "yahoo.com.br", "empresa.com.br", "Outlook.com")
_INVALID = ("123", "(11) 1234", "0800", "+55 11 12345", "n/a", "11 2345")
_SAMPLE_S = 0.05


@dataclass(frozen=True, slots=True)
class Generated:
    """What the generator wrote: rows, and how many it meant as invalid or as duplicates."""

    rows: int
    invalid: int
    duplicates: int
    size: int


def _written(area: str, local: str, style: int) -> str:
    """The phone ``+55 area local`` written in one of the ways people type it."""
    if style == 0:
        return f"({area}) {local[:5]}-{local[5:]}"
    if style == 1:
        return f"0{area} {local[:5]} {local[5:]}"
    if style == 2:
        return f"+55 {area} {local[:5]}-{local[5:]}"
    return f"{area}{local[1:]}"  # an old 8-digit mobile: the 9th digit is added back


def generate_leads(path: Path, rows: int, seed: int = 7) -> Generated:
    """Write ``rows`` data rows to ``path`` (CSV, UTF-8) and say what went in."""
    rng = random.Random(seed)
    invalid = duplicates = 0
    earlier: list[tuple[str, str]] = []
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("nome,telefone,email,canal,cidade\n")
        lines: list[str] = []
        for i in range(rows):
            roll = rng.random()
            area = _AREAS[i % len(_AREAS)]
            local = f"9{8000_0000 + i // len(_AREAS):08d}"
            if roll < 0.01 and earlier:
                area, local = rng.choice(earlier)
                phone = _written(area, local, rng.randrange(3))
                duplicates += 1
            elif roll < 0.03:
                phone = rng.choice(_INVALID)
                invalid += 1
            elif roll < 0.33:
                phone = _written(area, local, rng.randrange(4))
            else:
                phone = f"+55{area}{local}"
            if roll >= 0.03:  # a valid first occurrence: a later row may repeat it
                if len(earlier) < 10_000:
                    earlier.append((area, local))
                else:
                    earlier[rng.randrange(10_000)] = (area, local)
            domain = _DOMAINS[i % len(_DOMAINS)]
            lines.append(f"Lead {i},{phone},lead{i}@{domain},SMS,{_CITIES[i % len(_CITIES)]}\n")
            if len(lines) >= 10_000:
                out.writelines(lines)
                lines.clear()
        out.writelines(lines)
    return Generated(rows, invalid, duplicates, path.stat().st_size)


@dataclass(slots=True)
class RunResult:
    """One ingest run: its report, speed, peak memory and where the CPU time went."""

    label: str
    rows: int
    seconds: float
    wall_s: float
    leads_per_s: float
    peak_rss_mb: float
    processes: int
    cpu_s: dict[str, float] = field(default_factory=dict)
    report: dict[str, object] = field(default_factory=dict)
    exit_code: int = 0

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class _Sampler(threading.Thread):
    """Peak RSS of a process tree, and the last CPU time seen of each process of interest."""

    def __init__(self, root: psutil.Process, database_url: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.database_url = database_url
        self.peak_rss = 0
        self.most_processes = 0
        self.cpu: dict[int, float] = {}
        self.backends: dict[int, psutil.Process] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        port = urlsplit(self.database_url).port or 5432
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            tick = 0
            while not self.stopping.wait(_SAMPLE_S):
                tick += 1
                try:
                    tree = [self.root, *self.root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                rss = 0
                for process in tree:
                    try:
                        rss += process.memory_info().rss
                        self.cpu[process.pid] = sum(process.cpu_times()[:2])
                    except psutil.NoSuchProcess:
                        continue
                self.peak_rss = max(self.peak_rss, rss)
                self.most_processes = max(self.most_processes, len(tree))
                if tick % 5 == 1:  # sockets and a query, CPU taken from the run: 4 times a second
                    self._find_backends(conn, tree, port)
                for pid, backend in list(self.backends.items()):
                    try:
                        self.cpu[-pid] = sum(backend.cpu_times()[:2])
                    except psutil.NoSuchProcess:
                        del self.backends[pid]

    def _find_backends(self, conn: psycopg.Connection, tree: list[psutil.Process], port: int) -> None:
        for pid in client_backends(conn, tree, port):
            if pid not in self.backends:
                self.backends[pid] = psutil.Process(pid)

    def cpu_of(self, backends: bool) -> float:
        return sum(cpu for pid, cpu in self.cpu.items() if (pid < 0) == backends)


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_ingest(
    label: str,
    command: Sequence[str],
    path: Path,
    env: dict[str, str],
    redis_url: str,
    database_url: str,
    args: Sequence[str] = (),
) -> RunResult:
    """Run ``command --quiet ingest PATH --json ARGS`` in a fresh namespace (dropped afterwards)."""
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(redis_url)
    env = {**env, "LEADCTL_NAMESPACE": namespace}
    redis_before = _redis_cpu(client)
    started = time.perf_counter()
    process = psutil.Popen(
        [*command, "--quiet", "ingest", str(path), "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=path.parent,
    )
    sampler = _Sampler(psutil.Process(process.pid), database_url)
    sampler.start()
    try:
        out, errors = process.communicate()
    finally:
        sampler.stopping.set()
        sampler.join()
    wall = time.perf_counter() - started
    redis_cpu = _redis_cpu(client) - redis_before
    purge_namespace(client, database_url, namespace)
    client.close()
    try:
        report = orjson.loads(out)
    except orjson.JSONDecodeError:
        raise RuntimeError(f"{label}: ingest printed no report: {errors.decode()[-500:]}") from None
    seconds = float(report["seconds"])
    return RunResult(
        label=label,
        rows=int(report["rows"]),
        seconds=seconds,
        wall_s=round(wall, 3),
        leads_per_s=round(int(report["rows"]) / seconds) if seconds else 0,
        peak_rss_mb=round(sampler.peak_rss / 2**20, 1),
        processes=sampler.most_processes,
        cpu_s={
            "leadctl": round(sampler.cpu_of(backends=False), 2),
            "postgres": round(sampler.cpu_of(backends=True), 2),
            "redis": round(redis_cpu, 2),
        },
        report={k: report[k] for k in ("accepted", "rejected", "duplicates", "suppressed") if k in report}
        | ({"timings": report["timings"]} if "timings" in report else {}),
        exit_code=process.returncode,
    )


def bench_file(directory: Path, rows: int) -> Path:
    """The generated file of ``rows`` rows in ``directory``, made once and then reused."""
    path = directory / f"bench-leads-{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".part")
        generate_leads(partial, rows)
        os.replace(partial, path)
    return path


GOAL_LEADS_PER_S = 100_000
GOAL_ROWS = 1_000_000
"""The leads/s goal is for a file this big (issue #3); smaller runs pay interpreter and worker start-up."""
GOAL_PEAK_RSS_MB = 300
GOAL_RSS_SPREAD = 0.20


@dataclass(slots=True)
class BenchReport:
    """Runs per version ('current', and the compared git ref if any), and the issue's goals."""

    runs: list[RunResult]

    def goals(self) -> dict[str, bool]:
        current = [r for r in self.runs if r.label == "current"]
        rss = [r.peak_rss_mb for r in current]
        return {
            "leads_per_s": any(r.rows >= GOAL_ROWS for r in current)
            and all(r.leads_per_s >= GOAL_LEADS_PER_S for r in current if r.rows >= GOAL_ROWS),
            "peak_rss": all(r.peak_rss_mb <= GOAL_PEAK_RSS_MB for r in current),
            "same_rss": bool(rss) and max(rss) <= min(rss) * (1 + GOAL_RSS_SPREAD),
        }

    def as_json(self) -> dict[str, object]:
        return {"runs": [r.as_json() for r in self.runs], "goals": self.goals()}


def checkout(ref: str, into: Path) -> Path:
    """The leadctl package of git ``ref`` of the checkout this leadctl runs from, extracted (with
    `git archive`, leaving the repository untouched) under ``into``."""
    repo = Path(__file__).resolve().parents[2]
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise ValueError(f"not a commit of the git checkout {repo}: {ref!r}")
    sha = commit.stdout.strip()
    target = into / f"leadctl-{sha[:12]}"
    if not target.exists():
        partial = into / f"leadctl-{sha[:12]}.part"
        partial.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "leadctl"], cwd=repo, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        partial.rename(target)
    return target


def run_bench(
    sizes: Sequence[int],
    directory: Path,
    env: dict[str, str],
    redis_url: str,
    database_url: str,
    python: str,
    compare: tuple[str, Path] | None = None,
    announce: Callable[[str], None] = lambda line: None,
) -> BenchReport:
    """Ingest a generated file of each size with this leadctl and, when ``compare`` = (label, path
    of another leadctl package) is given, with that one too, one after the other."""
    versions: list[tuple[str, dict[str, str]]] = [("current", env)]
    if compare is not None:
        label, package = compare
        versions.append((label, {**env, "PYTHONPATH": str(package)}))
    runs = []
    for rows in sizes:
        path = bench_file(directory, rows)
        for label, version_env in versions:
            announce(f"ingesting {rows:,} rows with {label}...")
            result = run_ingest(label, [python, "-m", "leadctl"], path, version_env, redis_url, database_url)
            announce(f"  {result.leads_per_s:,.0f} leads/s, peak RSS {result.peak_rss_mb:,.0f} MB")
            runs.append(result)
    return BenchReport(runs)


DEFAULT_SIZES = (100_000, 1_000_000)
"""Leads in the generated files of `leadctl bench ingest` without --rows."""


def bench_ingest(
    settings: Settings,
    endpoints: Endpoints,
    config: Path | None,
    sizes: Sequence[int] = DEFAULT_SIZES,
    compare: str | None = None,
    directory: Path | None = None,
    announce: Callable[[str], None] = lambda line: None,
) -> BenchReport:
    """`leadctl bench ingest`: run_bench in ``directory`` (default: ``<data_dir>/bench``), each run's
    leadctl using this one's ``config`` and ``endpoints``; ``compare``: a git commit to run too."""
    workdir = directory or settings.data_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LEADCTL_REDIS_URL": endpoints.redis_url,
        "LEADCTL_DATABASE_URL": endpoints.database_url,
    }
    if config is not None:
        env["LEADCTL_CONFIG"] = str(config.resolve())
    compared = None
    if compare is not None:
        try:
            compared = (compare, checkout(compare, workdir))
        except (ValueError, OSError) as exc:
            raise UsageError(f"--compare {compare}: {exc}") from None
    return run_bench(
        sizes,
        workdir.resolve(),
        env,
        endpoints.redis_url,
        endpoints.database_url,
        sys.executable,
        compared,
        announce,
    )
