"""Message templates: Jinja2 in a sandbox, strict about missing fields, per channel and per campaign.

Templates come from configuration: ``channels.<channel>.template`` (sms, whatsapp) or
``channels.email.email.{subject,text,html}``, and a campaign may override any of them under
``campaigns.<campaign>.<channel>`` (``template``; email: ``subject``, ``text``, ``html``); what it
leaves out falls back to the channel's. Lead data is only ever a variable, never rendered as a
template itself, and the sandbox keeps even a hostile template from reaching Python internals.

HTML bodies are autoescaped (a lead named ``<script>`` arrives as text); subjects, text bodies and
SMS/WhatsApp bodies are not. A message renders to at most ``MAX_RENDERED_CHARS`` characters, and
any error a lead's data causes (``100 // 0``, ``'a' + 1``) is that lead's RenderError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from leadctl.config import CampaignTemplate, ChannelSettings
from leadctl.errors import ConfigError

MAX_RENDERED_CHARS = 1_000_000
MAX_EXPONENT = 10_000


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, also refusing ``*`` and ``**`` results too large for any message
    (jinja2's documented hook for this: ``intercepted_binops`` + ``call_binop``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                repeats = isinstance(sequence, str | list | tuple) and isinstance(times, int)
                if repeats and len(sequence) * times > MAX_RENDERED_CHARS:
                    raise SecurityError(f"a repetition longer than {MAX_RENDERED_CHARS:,} characters")
        elif isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT:,}")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_HTML_ENV = _Sandbox(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=False)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


class RenderError(Exception):
    """A lead lacks a field its template uses, or the template failed on its data."""


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One campaign's (or the channel's) compiled templates and where they were configured."""

    body: Template
    body_key: str
    subject: Template | None = None
    subject_key: str = ""
    html: Template | None = None
    html_key: str = ""


def _compile(source: str, key: str, environment: SandboxedEnvironment = _ENV) -> Template:
    try:
        template = environment.from_string(source)
    except TemplateError as exc:
        raise ConfigError(f"template {key} is invalid: {exc}") from None
    # a template's globals are a ChainMap over the environment's, copied key by key on every render
    # (a good part of rendering a short message): one plain dict of the same globals instead
    template.globals = dict(template.globals)
    return template


def _pick(
    override: str | None, campaign_key: str, default: str | None, channel_key: str
) -> tuple[str | None, str]:
    return (override, campaign_key) if override is not None else (default, channel_key)


def _render(template: Template, key: str, variables: Mapping[str, Any]) -> str:
    """Render, stopping as soon as the output passes MAX_RENDERED_CHARS."""
    parts: list[str] = []
    length = 0
    try:
        for part in template.generate(variables):
            length += len(part)
            if length > MAX_RENDERED_CHARS:
                raise RenderError(f"template {key} renders more than {MAX_RENDERED_CHARS:,} characters")
            parts.append(part)
        return "".join(parts)
    except RenderError:
        raise
    except UndefinedError as exc:
        found = _UNDEFINED_NAME.match(str(exc))
        if found:
            raise RenderError(f"template {key} uses {found.group(1)!r}, which this lead lacks") from None
        raise RenderError(f"template {key}: {exc}") from None
    except TemplateError as exc:
        raise RenderError(f"template {key}: {exc}") from None
    except Exception as exc:  # the lead's data broke an expression: 100 // 0, 'a' + 1, int('x')
        raise RenderError(f"template {key}: {type(exc).__name__}: {exc}") from None


class ChannelTemplate:
    """The compiled template(s) of one channel: body for sms/whatsapp; subject, text and html for email.

    ``campaigns`` is ``Settings.campaigns``; every campaign's overrides are compiled once, here, so
    a broken template is a configuration error at start-up, not a failure per lead.
    """

    def __init__(
        self,
        channel: str,
        settings: ChannelSettings,
        campaigns: Mapping[str, Mapping[str, CampaignTemplate]] | None = None,
    ) -> None:
        self.channel = channel
        self._default = self._compile_set(settings, CampaignTemplate(), "")
        self._by_campaign: dict[str, _Compiled] = {}
        for campaign, channels in (campaigns or {}).items():
            override = channels.get(channel)
            if override is not None:
                where = f"campaigns.{campaign}.{channel}"
                self._by_campaign[campaign] = self._compile_set(settings, override, where)

    def _compile_set(self, settings: ChannelSettings, override: CampaignTemplate, where: str) -> _Compiled:
        channel = self.channel
        if channel != "email":
            if override.subject or override.text or override.html:
                raise ConfigError(f"{where}: subject, text and html are for email; use template")
            source, key = _pick(
                override.template, f"{where}.template", settings.template, f"channels.{channel}.template"
            )
            return _Compiled(_compile(source or "", key), key)
        if override.template is not None:
            raise ConfigError(f"{where}: email takes subject, text and html, not template")
        email = settings.email
        channel_key = "channels.email.email"
        text, text_key = _pick(override.text, f"{where}.text", email.text, f"{channel_key}.text")
        subject, subject_key = _pick(
            override.subject, f"{where}.subject", email.subject, f"{channel_key}.subject"
        )
        html, html_key = _pick(override.html, f"{where}.html", email.html, f"{channel_key}.html")
        return _Compiled(
            _compile(text or "", text_key),
            text_key,
            _compile(subject or "", subject_key),
            subject_key,
            _compile(html, html_key, _HTML_ENV) if html else None,
            html_key,
        )

    def render(self, variables: Mapping[str, Any], campaign: str | None = None) -> Rendered:
        """Render for one lead; ``campaign`` defaults to ``variables["campaign"]``."""
        if campaign is None:
            campaign = variables.get("campaign")
        compiled = self._by_campaign.get(campaign, self._default) if campaign else self._default
        return Rendered(
            body=_render(compiled.body, compiled.body_key, variables),
            subject=_render(compiled.subject, compiled.subject_key, variables) if compiled.subject else None,
            html=_render(compiled.html, compiled.html_key, variables) if compiled.html else None,
        )
