"""The records that flow from a lead file to the queue: an accepted Lead or a rejected row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Lead:
    """One accepted, normalised lead, ready to be recorded and queued.

    ``contact`` is what de-duplicates and what the provider sends to: the E.164 phone for sms and
    whatsapp, the normalised email for email. ``fields`` holds every other column of the row
    (template variables), ``line`` the line number in the input it came from.
    """

    channel: str
    contact: str
    name: str
    campaign: str
    line: int
    phone: str | None = None
    email: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


@dataclass(slots=True)
class Reject:
    """One input row leadctl did not take, with the reason a user can act on."""

    line: int
    code: str
    message: str
    raw: dict[str, Any] | list[Any] | str | None = None
    source: str = ""
