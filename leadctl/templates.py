"""Message templates: Jinja2 in a sandbox, strict about missing fields.

Templates come from configuration; lead data is only ever a variable, never rendered as a template
itself, and the sandbox keeps even a hostile template from reaching Python internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from leadctl.config import ChannelSettings
from leadctl.errors import ConfigError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class RenderError(Exception):
    """A lead lacks a field its template uses, or the template failed on its data."""


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str
    subject: str | None = None
    html: str | None = None


def _compile(source: str, where: str) -> Any:
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise ConfigError(f"template {where} is invalid: {exc}") from None


class ChannelTemplate:
    """The compiled template(s) of one channel: body for sms/whatsapp; subject, text and html for email."""

    def __init__(self, channel: str, settings: ChannelSettings) -> None:
        self.channel = channel
        if channel == "email":
            self._body = _compile(settings.email.text, "channels.email.email.text")
            self._subject = _compile(settings.email.subject, "channels.email.email.subject")
            self._html = (
                _compile(settings.email.html, "channels.email.email.html") if settings.email.html else None
            )
        else:
            self._body = _compile(settings.template, f"channels.{channel}.template")
            self._subject = self._html = None

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        try:
            return Rendered(
                body=self._body.render(variables),
                subject=self._subject.render(variables) if self._subject else None,
                html=self._html.render(variables) if self._html else None,
            )
        except TemplateError as exc:
            raise RenderError(str(exc)) from None
