"""`leadctl prune`: finished leads older than the cutoff go with their deliveries, in batches;
unfinished leads, recent ones and the suppression list stay."""

from __future__ import annotations

import json

import psycopg
import pytest

from leadctl.config import Settings
from leadctl.connections import open_postgres
from leadctl.ops.prune import parse_age
from leadctl.records import Lead
from leadctl.store.leads import LeadWriter
from tests.support.cli import run_leadctl

# (status, finished this many days ago (None: never), queued this many days ago)
LEADS = [
    ("sent", 100, 101),  # old: goes
    ("failed", 95, 95),  # old: goes
    ("in_doubt", 91, 120),  # old: goes
    ("dead", 200, 200),  # old: goes
    ("suppressed", None, 120),  # suppressed at ingest long ago: goes
    ("sent", 10, 100),  # queued long ago but finished recently: stays
    ("queued", None, 300),  # never sent: stays
    ("sending", None, 300),  # being sent: stays
    ("sent", 1, 1),  # recent: stays
]


def seed(settings: Settings, pg: psycopg.Connection) -> None:
    conn = open_postgres(settings.database.url or "", settings)
    leads = [
        Lead("sms", f"+5511990000{i:03d}", f"Lead {i}", "c", i + 2, phone=f"+5511990000{i:03d}")
        for i in range(len(LEADS))
    ]
    recorded = LeadWriter(settings.namespace).record(conn, leads, "seed")
    conn.close()
    schema = f'"{settings.namespace}"'
    for row, (status, finished, queued) in zip(recorded, LEADS, strict=True):
        pg.execute(  # the lead's deliveries row, as its claim and outcome would have written it
            f"INSERT INTO {schema}.deliveries (lead_id, channel, campaign, status, queued_at, finished_at) "
            "SELECT id, channel, campaign, %s, now() - make_interval(days => %s), "
            f"now() - make_interval(days => %s) FROM {schema}.leads WHERE id = %s",
            (status, queued, finished, row.lead_id),
        )
    pg.execute(f"INSERT INTO {schema}.suppressions (contact, reason) VALUES ('+5511990000004', 'opt-out')")


def remaining(pg: psycopg.Connection, namespace: str) -> list[tuple[str, int | None]]:
    return pg.execute(
        f"""SELECT d.status, extract(day FROM now() - d.finished_at)::int FROM "{namespace}".lead_deliveries d
              JOIN "{namespace}".leads l ON l.id = d.lead_id ORDER BY l.id"""
    ).fetchall()


def test_parse_age() -> None:
    assert parse_age("90d").days == 90 and parse_age("2w").days == 14 and parse_age("36h").days == 1
    for bad in ("90", "0d", "1y", "-3d"):
        with pytest.raises(ValueError, match="--older-than"):
            parse_age(bad)


def test_prune_deletes_old_finished_leads_in_batches_and_keeps_the_rest(
    settings: Settings, leadctl_env: dict[str, str], pg: psycopg.Connection
) -> None:
    seed(settings, pg)
    dry = run_leadctl(["prune", "--older-than", "90d", "--dry-run", "--json"], leadctl_env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["dry_run"], report["leads"], report["channels"]) == (True, 5, {"sms": 5})
    assert len(remaining(pg, settings.namespace)) == len(LEADS)

    done = run_leadctl(["prune", "--older-than", "90d", "--batch-size", "2", "--json"], leadctl_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["dry_run"], report["leads"], report["batches"]) == (False, 5, 3)
    assert remaining(pg, settings.namespace) == [
        ("sent", 10),
        ("queued", None),
        ("sending", None),
        ("sent", 1),
    ]
    suppressed = pg.execute(f'SELECT count(*) FROM "{settings.namespace}".suppressions').fetchone()
    assert suppressed == (1,)

    again = run_leadctl(["prune", "--older-than", "90d"], leadctl_env)
    assert again.returncode == 0 and "pruned 0 leads finished before" in again.stderr


def test_prune_refuses_a_bad_age_in_one_line(leadctl_env: dict[str, str]) -> None:
    result = run_leadctl(["prune", "--older-than", "3 months"], leadctl_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --older-than takes an age like 90d, 12w, 36h or 30m, not '3 months'"
    ]
