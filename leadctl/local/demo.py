"""`leadctl demo`: a lead file sent end to end through the local sandbox provider.

It runs in its own namespace (``demo``), emptied first so the demo can be run again, with SMS and
WhatsApp going to the sandbox (Twilio's wire format over real HTTP) and email to the log provider.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from leadctl.config import CHANNELS, Settings
from leadctl.connections import Endpoints, open_postgres, open_redis
from leadctl.errors import InputError
from leadctl.ingest import ParseOptions
from leadctl.ingest.pipeline import Ingestor
from leadctl.local.namespaces import purge_namespace
from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, sandbox_in_thread
from leadctl.ops.stats import channel_stats
from leadctl.records import Status
from leadctl.send.supervisor import PoolSpec, Supervisor

DEMO_NAMESPACE = "demo"


def demo_settings(settings: Settings, sandbox_url: str) -> Settings:
    """The user's settings, pointed at the demo namespace and the sandbox provider."""
    data = settings.model_dump(by_alias=True)
    data["namespace"] = DEMO_NAMESPACE
    data["providers"]["sandbox"] = {
        "type": "twilio",
        "base_url": sandbox_url,
        "account_sid": SANDBOX_ACCOUNT_SID,
        "auth_token": SANDBOX_AUTH_TOKEN,
        "from": "+15005550006",
    }
    for channel in ("sms", "whatsapp"):
        data["channels"][channel]["provider"] = "sandbox"
    data["channels"]["email"]["provider"] = "log"
    return Settings.model_validate(data)


def run_demo(
    settings: Settings, endpoints: Endpoints, file: Path, workers: int, say: Callable[[str], None]
) -> int:
    """Ingest ``file`` and send every lead through the sandbox; return the exit code."""
    if not file.is_file():
        raise InputError(f"{file}: no such file (run the demo from the leadctl checkout, or pass --file)")
    with sandbox_in_thread() as sandbox:
        demo = demo_settings(settings, sandbox.base_url)
        client = open_redis(endpoints.redis_url, demo)
        purge_namespace(client, endpoints.database_url, DEMO_NAMESPACE)
        conn = open_postgres(endpoints.database_url, demo)
        demo.data_dir.mkdir(parents=True, exist_ok=True)
        rejects = demo.data_dir / "demo.rejects.csv"
        ingestor = Ingestor(DEMO_NAMESPACE, conn, client, demo.ingest.batch_size)
        report = ingestor.ingest(
            [str(file)], ParseOptions(region=demo.default_region), demo.ingest.columns, rejects
        )
        say(
            f"ingested {file}: {report.rows} rows, {report.accepted} accepted, {report.rejected} rejected "
            f"(reasons in {rejects}), {report.duplicates} duplicates"
        )
        pools = [
            PoolSpec(ch, workers, demo.channel(ch).concurrency) for ch in CHANNELS if report.channels.get(ch)
        ]
        results = Supervisor(demo, endpoints, pools, burst=True).run()
        unsent = sum(r.unsent for r in results.values())
        for channel, result in results.items():
            sent = result.statuses.get(Status.SENT, 0)
            say(f"{channel}: sent {sent} with {workers} workers in {result.seconds:.1f}s")
        figures = channel_stats(client, conn, DEMO_NAMESPACE)
        stats = sandbox.stats()
        conn.close()
        client.close()
    for channel, values in figures.items():
        say(f"  {channel:<9} " + "  ".join(f"{key} {value}" for key, value in values.items()))
    say(
        f"sandbox provider received {stats['accepted']} messages, {stats['duplicates']} duplicates; "
        f"look again with `LEADCTL_NAMESPACE={DEMO_NAMESPACE} leadctl stats`"
    )
    return 1 if unsent or stats["duplicates"] else 0
