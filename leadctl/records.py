"""The records that flow through leadctl: an accepted Lead or a rejected row from a lead file, and
the statuses a lead's send goes through.

Statuses are StrEnums: each member is its own lower-case name as a ``str``, so SQL parameters,
Redis fields and JSON values are the same text as before they were typed. A dict key headed for
``orjson`` must be the plain ``str`` (``status.value``): orjson takes no str subclass as a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Where a lead's send stands: the ``status`` of its ``deliveries`` row (a lead without a row is
    QUEUED), as ``store.deliveries`` describes; DEFERRED and CAPPED are only counted in a worker's
    report (the send gate gave the lead back: its row is QUEUED with a ``not_before``, or SUPPRESSED).
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    IN_DOUBT = "in_doubt"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    CAPPED = "capped"


class ReceiptStatus(StrEnum):
    """What a provider's delivery receipt says of a sent message (``deliveries.delivery_status``),
    in the order a message goes through them: SENT < DELIVERED < UNDELIVERED / BOUNCED < READ."""

    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    READ = "read"


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
