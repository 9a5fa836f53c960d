"""`leadctl suppress`: the contacts ingest never queues, as a person types them.

A contact is given as written (``(11) 98765-4321``, ``Ana@Example.COM``) and stored as ingest stores
a lead's contact (E.164 phone, normalised email), so ingest matches it exactly. A channel is one
channel's name or ``ALL_CHANNELS`` (the entry for every channel). The list itself is
leadctl.store.suppressions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from leadctl.config import Settings
from leadctl.connections import Endpoints, open_postgres
from leadctl.errors import InputError, UsageError
from leadctl.ingest.contacts import Contact, read_contacts
from leadctl.ingest.normalise import Invalid, normalise_contact
from leadctl.ingest.parse import ParseOptions
from leadctl.masking import mask_contact
from leadctl.records import Reject
from leadctl.store.suppressions import ALL_CHANNELS, Suppression, SuppressionList


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Entries added, of ``distinct`` given (the others were listed already), and the values of a
    file that were not valid contacts."""

    added: int
    distinct: int
    invalid: list[Reject] = field(default_factory=list)

    @property
    def already(self) -> int:
        return self.distinct - self.added


def normalised_contacts(values: Sequence[str], region: str, channel: str | None = None) -> list[str]:
    """Contacts as ingest stores them; UsageError on the first that is not a valid phone or email,
    or (given ``channel``) that cannot be sent on it."""
    contacts = []
    for value in values:
        result = normalise_contact(value, region)
        if isinstance(result, Invalid):
            kind = "email: " if "@" in value else ""
            raise UsageError(f"{mask_contact(value.strip())}: {kind}{result.message}")
        if channel not in (None, ALL_CHANNELS) and ("@" in result) != (channel == "email"):
            raise UsageError(f"{mask_contact(result)} cannot be suppressed on {channel}")
        contacts.append(result)
    return contacts


def suppress_contacts(
    settings: Settings, endpoints: Endpoints, values: Sequence[str], channel: str, reason: str
) -> Suppressed:
    """Suppress contacts typed as ``values`` on ``channel``."""
    contacts = normalised_contacts(values, settings.default_region, channel)
    with open_postgres(endpoints.database_url, settings) as conn:
        added = SuppressionList(settings.namespace).add(conn, [(c, channel) for c in contacts], reason)
    return Suppressed(added, len(set(contacts)))


def suppress_file(
    settings: Settings,
    endpoints: Endpoints,
    source: str,
    channel: str,
    reason: str,
    options: ParseOptions,
) -> Suppressed:
    """Suppress every phone and email of ``source`` (a lead file, or a list one per line; - for
    stdin) that can be sent on ``channel``; ``options`` get the region of ``settings``."""
    if source != "-" and not Path(source).exists():
        raise InputError(f"{source}: no such file")
    options = replace(options, region=settings.default_region)
    entries: list[tuple[str, str]] = []
    invalid: list[Reject] = []
    for item in read_contacts(source, options, settings.ingest.columns):
        if isinstance(item, Contact):
            if channel == ALL_CHANNELS or (item.kind == "email") == (channel == "email"):
                entries.append((item.contact, channel))
        else:
            invalid.append(item)
    with open_postgres(endpoints.database_url, settings) as conn:
        added = SuppressionList(settings.namespace).add(conn, entries, reason)
    return Suppressed(added, len(set(entries)), invalid)


def unsuppress_contacts(
    settings: Settings, endpoints: Endpoints, values: Sequence[str], channel: str | None
) -> int:
    """Remove the entries of the contacts typed as ``values`` on ``channel`` (None: every entry of
    each); how many were removed."""
    contacts = normalised_contacts(values, settings.default_region)
    with open_postgres(endpoints.database_url, settings) as conn:
        return SuppressionList(settings.namespace).remove(conn, contacts, channel)


def suppressions(
    settings: Settings, endpoints: Endpoints, channel: str | None, limit: int
) -> tuple[int, list[Suppression]]:
    """How many entries the list has (on ``channel`` when given), and the newest ``limit``."""
    with open_postgres(endpoints.database_url, settings) as conn:
        return SuppressionList(settings.namespace).entries(conn, channel, limit)
