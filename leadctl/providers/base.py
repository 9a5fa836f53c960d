"""The one small interface every provider implements, and how it reports failure.

A provider turns a rendered Message into a SendResult or raises ProviderError whose ``kind`` tells
the worker what to do next:

- ``permanent``: the provider refused the message for good (invalid number, opted out): fail the lead.
- ``transient``: it certainly was not sent (connect error, 5xx, 429): retry later, after ``retry_after``.
- ``in_doubt``: the request may have reached the provider but no answer came (read timeout, reset
  after the body was written): never retried automatically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class ErrorKind(StrEnum):
    """How a send failed (module doc): what the worker does next."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    IN_DOUBT = "in_doubt"


AUTH_ERROR = "auth"
"""The ``code`` of a ProviderError meaning our credentials were refused: no lead is at fault, so the
worker releases its claims and stops instead of failing every lead."""


@dataclass(slots=True)
class Message:
    """What to send to one lead, already rendered from the channel's template."""

    lead_id: int
    channel: str
    to: str
    body: str
    subject: str | None = None
    html: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SendResult:
    """The provider accepted the message; ``message_id`` is its id for it (Twilio's SID...).

    ``segments``: the SMS segments the provider says it will bill, when its answer tells (Twilio's
    ``num_segments``); None otherwise, and the worker counts them itself (``leadctl.send.segments``).
    """

    message_id: str
    details: dict[str, Any] | None = None
    segments: int | None = None


class ProviderError(Exception):
    """A send that did not succeed, classified for the worker."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        opted_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.opted_out = opted_out

    def __repr__(self) -> str:
        return f"ProviderError({str(self.kind)!r}, {self.message!r}, code={self.code!r})"


def transient(exc: BaseException) -> bool:
    """A provider error that certainly did not send: worth another attempt (leadctl.retry)."""
    return isinstance(exc, ProviderError) and exc.kind == ErrorKind.TRANSIENT


def lead_fields(message: Message, names: Sequence[str]) -> list[str]:
    """The values of a provider-side template's variables, from the lead's fields, in order.

    A lead lacking one fails for good before any request (code ``template_field``).
    """
    values: list[str] = []
    for name in names:
        value = message.fields.get(name)
        if value is None or value == "":
            raise ProviderError(
                ErrorKind.PERMANENT,
                f"the template needs lead field {name!r}, which is empty",
                code="template_field",
            )
        values.append(str(value))
    return values


class Provider(Protocol):
    """A messaging API. One instance per worker process, sharing that process's HTTP session.

    Optional: a provider that can pack many messages in one request also implements
    ``send_many`` (see BatchProvider); the worker uses it when present.
    """

    name: str

    async def send(self, message: Message) -> SendResult:
        """Send one message; raise ProviderError when it was not (certainly) sent."""
        ...


class BatchProvider(Provider, Protocol):
    """A Provider that also sends many messages in few requests (SendGrid's personalizations)."""

    async def send_many(self, messages: Sequence[Message]) -> list[SendResult | ProviderError]:
        """One outcome per message, in order; never raises ProviderError itself."""
        ...
