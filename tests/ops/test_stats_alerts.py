"""Alerts posted once per start and end to a real HTTP receiver; Prometheus metrics scraped over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from leadctl.config import Settings
from leadctl.connections import Endpoints
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.ops.stats import StatsSource
from tests.support.cli import leadctl_ok
from tests.support.files import EXAMPLES, stats_config, write_leads
from tests.support.waiting import wait_for


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A local HTTP server recording every JSON body POSTed to /hook, in its own thread and loop."""
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_an_alert_is_posted_once_when_it_starts_and_once_when_it_ends(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    write_leads(tmp_path / "leads.csv", 20)
    with webhook_receiver() as (url, received), sandbox_in_thread() as sandbox:
        config = stats_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        leadctl_ok(["--config", str(config), "ingest", str(tmp_path / "leads.csv")], leadctl_env)
        settings.alerts.queue_size = 5
        settings.alerts.webhook_url = url
        endpoints = Endpoints(settings.redis.url or "", settings.database.url or "")
        hosts = [StatsSource(settings, endpoints) for _ in range(2)]  # two hosts watching
        try:
            first, second = hosts
            posted = first.post_alerts(first.snapshot())
            assert len(posted) == 1 and posted[0].startswith("[FIRING]")
            assert second.post_alerts(second.snapshot()) == []
            assert first.post_alerts(first.snapshot()) == []

            leadctl_ok(
                ["--config", str(config), "work", "--channel", "sms", "--workers", "1", "--burst"],
                leadctl_env,
            )
            resolved = second.post_alerts(second.snapshot())
            assert len(resolved) == 1 and resolved[0].startswith("[RESOLVED]")
            assert first.post_alerts(first.snapshot()) == []
            assert second.post_alerts(second.snapshot()) == []
        finally:
            for host in hosts:
                host.close()

    assert [message["text"] for message in received] == [*posted, *resolved]
    assert all(set(message) == {"text"} for message in received)
    assert "sms: 20 leads waiting (alert above 5)" in posted[0]
    assert "sms: queue_size is over" in resolved[0]


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_serve_exposes_the_figures_to_prometheus_and_posts_alerts(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    write_leads(tmp_path / "leads.csv", 30)
    with webhook_receiver() as (url, received), sandbox_in_thread() as sandbox:
        config = stats_config(
            tmp_path / "leadctl.yaml", sandbox.base_url, f"alerts:\n  queue_size: 5\n  webhook_url: {url}\n"
        )
        base = ["--config", str(config)]
        leadctl_ok([*base, "ingest", str(tmp_path / "leads.csv"), "--campaign", "c"], leadctl_env)
        leadctl_ok([*base, "work", "--channel", "sms", "--workers", "1", "--max-leads", "10"], leadctl_env)
        server = subprocess.Popen(
            [sys.executable, "-m", "leadctl", *base, "stats", "--serve", "127.0.0.1:0", "--interval", "0.2"],
            env=leadctl_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            assert "serving Prometheus metrics on http://" in line, line
            metrics = _metrics(line.split(" on ", 1)[1].split()[0])
            wait_for(lambda: received, what="the alert posted to the webhook")
        finally:
            server.send_signal(signal.SIGINT)
            out, err = server.communicate(timeout=15)

    assert server.returncode == 0, err
    assert out == "" and "Traceback" not in err
    sms = (("channel", "sms"),)
    assert metrics[("leadctl_up", ())] == 1
    assert metrics[("leadctl_queue_depth", sms)] == 20
    assert metrics[("leadctl_pending", sms)] == 0
    assert metrics[("leadctl_workers", sms)] == 0

    def leads(status: str) -> float:
        return metrics[("leadctl_leads_total", (("campaign", "c"), ("channel", "sms"), ("status", status)))]

    assert (leads("sent"), leads("queued"), leads("failed")) == (10, 20, 0)
    call = (("channel", "sms"), ("provider", "twilio"))
    assert metrics[("leadctl_send_latency_seconds_count", call)] == 10
    every_call = (("channel", "sms"), ("le", "+Inf"), ("provider", "twilio"))
    assert metrics[("leadctl_send_latency_seconds_bucket", every_call)] == 10
    assert metrics[("leadctl_send_latency_seconds_sum", call)] > 0
    assert metrics[("leadctl_attempts_total", call)] == 10
    assert metrics[("leadctl_alert", (("alert", "queue_size"), ("channel", "sms")))] == 1
    assert metrics[("leadctl_spend", (("channel", "sms"), ("currency", "USD"), ("period", "today")))] == 0.1
    expected = f"[FIRING] leadctl {settings.namespace}: sms: 20 leads waiting (alert above 5)"
    assert [message["text"] for message in received] == [expected]

    # the shipped Prometheus rules and Grafana dashboard only use metrics the exporter serves
    used = set()
    for name in ("prometheus-alerts.yml", "grafana-dashboard.json"):
        used |= set(re.findall(r"leadctl_[a-z_]+", (EXAMPLES / name).read_text(encoding="utf-8")))
    assert used and used <= {name for name, _ in metrics}


def test_batch_posts_an_alert_once_while_it_lasts(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    write_leads(tmp_path / "leads.csv", 30)
    with webhook_receiver() as (url, received), sandbox_in_thread() as sandbox:
        config = stats_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        env = {**leadctl_env, "LEADCTL_ALERTS__QUEUE_SIZE": "10", "LEADCTL_ALERTS__WEBHOOK_URL": url}
        leadctl_ok(["--config", str(config), "ingest", str(tmp_path / "leads.csv")], env)
        for _ in range(2):  # each run leaves more than 10 queued: the alert is posted once
            leadctl_ok(["--config", str(config), "batch", "--workers", "1", "--limit", "5"], env)
        assert [m["text"].split(" ", 1)[0] for m in received] == ["[FIRING]"]
        leadctl_ok(["--config", str(config), "batch", "--workers", "1"], env)  # drains it: resolved
    assert [m["text"].split(" ", 1)[0] for m in received] == ["[FIRING]", "[RESOLVED]"]
