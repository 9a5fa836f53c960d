"""Receipts end to end: leads sent through the sandbox, whose signed callbacks (late, duplicated,
out of order, some failing) reach `leadctl webhooks serve`; every delivery ends in its right state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import yaml

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.local.sandbox.callbacks import (
    SANDBOX_META_APP_SECRET,
    SANDBOX_SENDGRID_PUBLIC_KEY,
    SANDBOX_ZENVIA_WEBHOOK_TOKEN,
)
from leadctl.local.sandbox.server import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_META_TOKEN,
    SANDBOX_PHONE_NUMBER_ID,
    SANDBOX_SENDGRID_KEY,
    SANDBOX_ZENVIA_TOKEN,
    sandbox_in_thread,
)
from leadctl.webhooks.server import serve_in_thread
from tests.support.cli import run_leadctl
from tests.support.waiting import wait_for

SUCCESS = {"twilio": "delivered", "zenvia": "delivered", "whatsapp_cloud": "read", "sendgrid": "read"}
FAILURE = {
    "twilio": "undelivered",
    "zenvia": "undelivered",
    "whatsapp_cloud": "undelivered",
    "sendgrid": "bounced",
}


def _providers(base_url: str) -> dict[str, Any]:
    return {
        "twilio": {
            "base_url": base_url,
            "account_sid": SANDBOX_ACCOUNT_SID,
            "auth_token": SANDBOX_AUTH_TOKEN,
            "from": "+15005550006",
        },
        "whatsapp_cloud": {
            "base_url": base_url,
            "access_token": SANDBOX_META_TOKEN,
            "phone_number_id": SANDBOX_PHONE_NUMBER_ID,
            "app_secret": SANDBOX_META_APP_SECRET,
        },
        "zenvia": {
            "base_url": base_url,
            "api_token": SANDBOX_ZENVIA_TOKEN,
            "from": "acme",
            "webhook_token": SANDBOX_ZENVIA_WEBHOOK_TOKEN,
        },
        "sendgrid": {
            "base_url": base_url,
            "api_key": SANDBOX_SENDGRID_KEY,
            "from": "ofertas@example.com",
            "webhook_public_key": SANDBOX_SENDGRID_PUBLIC_KEY,
        },
    }


def test_every_provider_receipt_ends_in_the_right_state(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection, namespace: str
) -> None:
    data = settings.model_dump(mode="json", by_alias=True)
    data["providers"] = _providers("http://127.0.0.1:9")
    configured = Settings.model_validate(data)
    open_postgres(configured.database.url or "", configured).close()
    endpoints = Endpoints(configured.redis.url or "", configured.database.url or "")
    first = [(f"S{i}", f"+55119876{i:05d}", "", "sms") for i in range(40)]
    first += [(f"W{i}", f"+55119875{i:05d}", "", "whatsapp") for i in range(40)]
    first += [(f"E{i}", "", f"lead{i}@example.com", "email") for i in range(40)]
    second = [(f"Z{i}", f"+55119874{i:05d}", "", "sms") for i in range(40)]
    header = "nome,telefone,email,canal\n"
    (tmp_path / "first.csv").write_text(
        header + "\n".join(",".join(r) for r in first) + "\n", encoding="utf-8"
    )
    (tmp_path / "second.csv").write_text(
        header + "\n".join(",".join(r) for r in second) + "\n", encoding="utf-8"
    )
    faults = {"callback_duplicate_rate": 0.5, "callback_reorder_rate": 0.5, "callback_failure_rate": 0.15}
    with (
        serve_in_thread(configured, endpoints) as webhooks,
        sandbox_in_thread(callback_url=webhooks.url, seed=5, **faults) as sandbox,
    ):

        def config(sms: str) -> str:
            tree = {
                "channels": {
                    "sms": {"provider": sms, "workers": 1},
                    "whatsapp": {"provider": "whatsapp_cloud", "workers": 1},
                    "email": {"provider": "sendgrid", "workers": 1},
                },
                "providers": _providers(sandbox.base_url),
            }
            path = tmp_path / f"{sms}.yaml"
            path.write_text(yaml.safe_dump(tree), encoding="utf-8")
            return str(path)

        for sms, leads, channels in (
            ("twilio", "first.csv", ["sms", "whatsapp", "email"]),
            ("zenvia", "second.csv", ["sms"]),
        ):
            assert (
                run_leadctl(
                    ["--config", config(sms), "ingest", str(tmp_path / leads)], leadctl_env
                ).returncode
                == 0
            )
            for channel in channels:
                result = run_leadctl(
                    ["--config", config(sms), "work", "--channel", channel, "--burst", "--json"], leadctl_env
                )
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout)["statuses"] == {"sent": 40}
        fates = dict(sandbox.server.callbacks.fates)

        def states() -> dict[tuple[str, str], str | None]:
            rows = pg.execute(
                f'SELECT d.provider, l.contact, d.delivery_status FROM "{namespace}".deliveries d '
                f'JOIN "{namespace}".leads l ON l.id = d.lead_id'
            ).fetchall()
            return {(provider, contact): status for provider, contact, status in rows}

        expected = {key: (SUCCESS if ok else FAILURE)[key[0]] for key, ok in fates.items()}
        wait_for(lambda: states() == expected, timeout=30, what="every receipt")
        stats = json.loads(run_leadctl(["--config", config("twilio"), "stats", "--json"], leadctl_env).stdout)
        callbacks = sandbox.stats()["callbacks"]

    assert len(expected) == 160 and 0 < sum(not ok for ok in fates.values()) < 60
    assert callbacks["failed"] == 0 and callbacks["sent"] > 160 * 2  # duplicates included
    bounced = sum(1 for (p, _), s in expected.items() if s == "bounced")
    events = dict(
        pg.execute(f'SELECT kind, count(*) FROM "{namespace}".webhook_events GROUP BY 1').fetchall()
    )
    assert events == ({"optout": bounced} if bounced else {})  # every receipt found its delivery
    assert pg.execute(f'SELECT count(*) FROM "{namespace}".suppressions').fetchone() == (
        bounced,
    )  # hard bounces
    email = stats["channels"]["email"]
    assert (
        email["read"]
        == email["delivered"]
        == sum(1 for (p, _), s in expected.items() if p == "sendgrid" and s == "read")
    )
    assert email["bounced"] == 40 - email["read"]
    sms = stats["providers"]["zenvia"]
    assert sms["delivered"] + sms["undelivered"] == 40
