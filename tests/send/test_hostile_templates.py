"""Issue #14: a lead's data that breaks its template is that lead's dead letter, never a stalled
worker; HTML mail is autoescaped; no template renders an unbounded message."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from leadctl.config import ChannelSettings, EmailTemplate, Settings
from leadctl.local.sandbox.server import sandbox_in_thread
from leadctl.send.templates import MAX_RENDERED_CHARS, ChannelTemplate, RenderError
from tests.support.cli import run_leadctl
from tests.support.files import sandbox_config


@pytest.mark.parametrize(
    ("source", "lead", "error"),
    [
        ("{{ 100 // discount|int }}% off", {"discount": "0"}, "ZeroDivisionError"),
        ("{{ city + '!' }}", {"city": 3}, "TypeError"),
        ("{{ '%d' % code }}", {"code": "x"}, "TypeError"),
        ("{{ 'x' * 10**8 }}", {}, f"{MAX_RENDERED_CHARS:,}"),
        ("{{ 2 ** (10 ** 7) }}", {}, "exponent"),
        ("{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}", {}, f"{MAX_RENDERED_CHARS:,}"),
    ],
)
def test_a_leads_data_that_breaks_its_template_is_a_render_error(
    source: str, lead: dict[str, object], error: str
) -> None:
    template = ChannelTemplate("sms", ChannelSettings(template=source))
    with pytest.raises(RenderError, match=error):
        template.render(lead)


def test_html_bodies_are_escaped_text_and_sms_are_not() -> None:
    name = "<script>alert(1)</script>"
    email = ChannelTemplate(
        "email",
        ChannelSettings(
            email=EmailTemplate(subject="Oi {{ name }}", text="Oi {{ name }}", html="<b>{{ name }}</b>")
        ),
    ).render({"name": name})
    assert email.html == "<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>"
    assert email.body == email.subject == f"Oi {name}"
    sms = ChannelTemplate("sms", ChannelSettings(template="Oi {{ name }} & cia")).render({"name": name})
    assert sms.body == f"Oi {name} & cia"


def test_a_lead_that_breaks_the_template_goes_dead_and_the_burst_ends(
    settings: Settings, leadctl_env: dict[str, str], tmp_path: Path, pg: psycopg.Connection
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("nome,telefone,desconto\nAna,11987650001,10\nBia,11987650002,0\nCaio,11987650003,20\n")
    with sandbox_in_thread() as sandbox:
        config = sandbox_config(tmp_path / "leadctl.yaml", sandbox.base_url)
        template = "Oi {{ name }}, {{ 100 // desconto|int }}% off"
        config.write_text(config.read_text().replace("Oi {{ name }}!", template))
        base = ["--config", str(config)]
        assert run_leadctl([*base, "ingest", str(leads)], leadctl_env).returncode == 0
        burst = [*base, "work", "--channel", "sms", "--burst", "--workers", "1", "--json"]
        worked = run_leadctl(burst, leadctl_env, timeout=60)  # before the fix it never returned
        sent = sorted(m["body"] for m in sandbox.messages())
    assert worked.returncode == 1, worked.stderr  # 1: a lead went dead
    assert json.loads(worked.stdout)["statuses"] == {"sent": 2, "dead": 1}
    assert sent == ["Oi Ana, 10% off", "Oi Caio, 5% off"]
    status, code, reason = pg.execute(
        f"SELECT d.status, d.error_code, d.error_message FROM \"{settings.namespace}\".deliveries d"
        f" JOIN \"{settings.namespace}\".leads l ON l.id = d.lead_id WHERE l.name = 'Bia'"
    ).fetchone()
    assert (status, code) == ("dead", "template_error")
    assert "ZeroDivisionError" in reason
