"""`leadctl bench ingest` runs end to end on a small generated file (the real figures are not tested)."""

from __future__ import annotations

import json
from pathlib import Path

from leadctl.bench.ingest import generate_leads
from leadctl.ingest import ParseOptions, parse_leads
from leadctl.records import Lead, Reject
from tests.support.cli import run_leadctl


def test_generated_file_has_the_advertised_mix(tmp_path: Path) -> None:
    made = generate_leads(tmp_path / "leads.csv", 5000)
    results = list(parse_leads(tmp_path / "leads.csv", ParseOptions()))
    leads = [r for r in results if isinstance(r, Lead)]
    rejects = [r for r in results if isinstance(r, Reject)]
    assert len(results) == made.rows == 5000
    assert len(rejects) == made.invalid and 0.01 < made.invalid / made.rows < 0.03
    assert len(leads) - len({lead.contact for lead in leads}) == made.duplicates > 0
    raw = (tmp_path / "leads.csv").read_text(encoding="utf-8").splitlines()[1:]
    normalised = sum(
        1 for line in raw if not line.split(",")[1].startswith("+55") or " " in line.split(",")[1]
    )
    assert 0.25 < normalised / made.rows < 0.40


def test_bench_ingest_command(leadctl_env: dict[str, str], tmp_path: Path) -> None:
    result = run_leadctl(
        ["bench", "ingest", "--rows", "2000", "--rows", "3000", "--dir", str(tmp_path), "--json"], leadctl_env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(run["label"], run["rows"]) for run in report["runs"]] == [("current", 2000), ("current", 3000)]
    for run in report["runs"]:
        assert run["leads_per_s"] > 0 and run["peak_rss_mb"] > 20 and run["exit_code"] == 1
        assert run["cpu_s"]["leadctl"] > 0
        assert (
            sum(run["report"][k] for k in ("accepted", "rejected", "duplicates", "suppressed")) == run["rows"]
        )
    assert set(report["goals"]) == {"leads_per_s", "peak_rss", "same_rss"}
