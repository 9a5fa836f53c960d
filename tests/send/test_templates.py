"""Templates: per-campaign overrides, strict fields, lead data never rendered, a sandbox that holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadctl.config import CampaignTemplate, ChannelSettings, EmailTemplate, load_settings
from leadctl.errors import ConfigError
from leadctl.send.templates import ChannelTemplate, RenderError

SMS = ChannelSettings(template="Olá {{ name }}! Oferta em {{ cidade }}.")
EMAIL = ChannelSettings(
    email=EmailTemplate(subject="{{ name }}, oferta", text="Oi {{ name }}", html="<b>{{ name }}</b>")
)
CAMPAIGNS = {
    "black-friday": {
        "sms": CampaignTemplate(template="BF: {{ name }}, 50% off!"),
        "email": CampaignTemplate(subject="Black Friday, {{ name }}!"),
    },
    "natal": {"whatsapp": CampaignTemplate(template="Feliz Natal, {{ name }}")},
}
LEAD = {"name": "Ana", "cidade": "Recife"}


def test_campaign_overrides_the_channel_template() -> None:
    template = ChannelTemplate("sms", SMS, CAMPAIGNS)
    assert template.render({**LEAD, "campaign": "black-friday"}).body == "BF: Ana, 50% off!"
    assert template.render(LEAD, campaign="black-friday").body == "BF: Ana, 50% off!"
    # a campaign without an sms override, and an unknown campaign, fall back to the channel's
    assert template.render({**LEAD, "campaign": "natal"}).body == "Olá Ana! Oferta em Recife."
    assert template.render({**LEAD, "campaign": "other"}).body == "Olá Ana! Oferta em Recife."
    assert template.render(LEAD).body == "Olá Ana! Oferta em Recife."


def test_email_override_keeps_the_channels_other_parts() -> None:
    rendered = ChannelTemplate("email", EMAIL, CAMPAIGNS).render({**LEAD, "campaign": "black-friday"})
    assert (rendered.subject, rendered.body, rendered.html) == ("Black Friday, Ana!", "Oi Ana", "<b>Ana</b>")
    plain = ChannelTemplate("email", EMAIL, CAMPAIGNS).render({**LEAD, "campaign": "natal"})
    assert plain.subject == "Ana, oferta"


def test_missing_field_names_it() -> None:
    template = ChannelTemplate("sms", SMS)
    with pytest.raises(RenderError, match=r"channels\.sms\.template uses 'cidade', which this lead lacks"):
        template.render({"name": "Ana"})
    override = ChannelTemplate("whatsapp", ChannelSettings(), CAMPAIGNS)
    with pytest.raises(RenderError, match=r"campaigns\.natal\.whatsapp\.template uses 'name'"):
        override.render({"campaign": "natal"})


def test_lead_data_is_never_rendered() -> None:
    rendered = ChannelTemplate("sms", SMS).render({"name": "{{ 7*7 }}", "cidade": "{% raw %}x"})
    assert rendered.body == "Olá {{ 7*7 }}! Oferta em {% raw %}x."


@pytest.mark.parametrize(
    "source",
    [
        "{{ name.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ name|attr('__class__') }}",
        "{{ '{0.__class__}'.format(name) }}",
    ],
)
def test_hostile_template_cannot_reach_python_internals(source: str) -> None:
    with pytest.raises(RenderError, match="unsafe"):
        ChannelTemplate("sms", ChannelSettings(template=source)).render(LEAD)


def test_broken_campaign_template_fails_at_start() -> None:
    with pytest.raises(ConfigError, match=r"campaigns\.bf\.sms\.template is invalid"):
        ChannelTemplate("sms", SMS, {"bf": {"sms": CampaignTemplate(template="{{ name ")}})
    with pytest.raises(ConfigError, match="use template"):
        ChannelTemplate("sms", SMS, {"bf": {"sms": CampaignTemplate(subject="x")}})
    with pytest.raises(ConfigError, match="not template"):
        ChannelTemplate("email", EMAIL, {"bf": {"email": CampaignTemplate(template="x")}})


def test_campaigns_load_from_config(tmp_path: Path) -> None:
    path = tmp_path / "leadctl.yaml"
    path.write_text(
        "campaigns:\n  black-friday:\n    sms: {template: 'BF {{ name }}'}\n"
        "    email: {subject: 'BF', html: '<i>{{ name }}</i>'}\n",
        encoding="utf-8",
    )
    settings = load_settings(path, environ={})
    template = ChannelTemplate("email", settings.channel("email"), settings.campaigns)
    rendered = template.render({"name": "Ana", "campaign": "black-friday"})
    assert (rendered.subject, rendered.html) == ("BF", "<i>Ana</i>")
    path.write_text("campaigns:\n  bf:\n    fax: {template: x}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"campaigns\.bf\.fax"):
        load_settings(path, environ={})
