"""Send windows in the lead's local time (quiet hours).

A window is ``allow: "09:00-20:00"`` on ``days: mon-sat`` (Brazil's marketing hours, the default;
the US TCPA window is ``08:00-21:00`` every day). The lead's time zone comes from a lead field
holding an IANA name (``America/Manaus``), else from its phone number (phonenumbers' time zone
data, by area code), else from ``compliance.default_timezone``.

A number may map to several zones (a Brazilian area code that spans two, a US non-geographic
number): the lead is then inside its window only when it is inside it in *every* candidate zone,
so nobody is messaged early or late whichever zone they are really in. That choice is
deterministic and never depends on the order phonenumbers lists the zones in. phonenumbers' data
is coarse for Brazil (area code 81 is listed as Noronha only, though Recife is an hour behind; 94
as Manaus, though Pará keeps Brasília time), so a Brazilian number's candidates always include
Brasília time too. When the candidates share no open hour at all (a toll-free number listed in
every North American zone), the default zone decides.

The settings' own values (``allow``, ``days``, a zone's name) are parsed in leadctl.config, which
validates them with the rest of the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from leadctl.config import parse_allow, parse_days, zone

_UNKNOWN_ZONE = "Etc/Unknown"
_LEGAL_TIME = {55: "America/Sao_Paulo"}
"""Countries whose per-area-code zone data is coarse: their legal time joins every number's candidates."""
_MAX_STEPS = 16


@dataclass(frozen=True, slots=True)
class Window:
    """Sending allowed from ``start`` to ``end`` (minutes after local midnight) on ``days``."""

    start: int
    end: int
    days: frozenset[int]

    @classmethod
    def parse(cls, allow: str, days: str) -> Window:
        start, end = parse_allow(allow)
        return cls(start, end, parse_days(days))

    def allows(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start <= minute < self.end

    def next_open(self, local: datetime) -> datetime:
        """The first moment at or after ``local`` (an aware datetime) when sending is allowed."""
        if self.allows(local):
            return local
        day = local.date()
        for offset in range(8):
            candidate_day = day + timedelta(days=offset)
            if candidate_day.weekday() not in self.days:
                continue
            opening = datetime.combine(candidate_day, _at(self.start), tzinfo=local.tzinfo)
            if opening > local:
                return opening
        raise AssertionError("a window with at least one day opens within a week")


def _at(minutes: int) -> clock_time:
    return clock_time(minutes // 60, minutes % 60)


def next_allowed(
    now: datetime, window: Window, zones: Sequence[ZoneInfo], fallback: ZoneInfo
) -> datetime | None:
    """None when ``now`` is inside the window in every zone, else the first moment it is (UTC);
    ``fallback`` decides alone when the zones' windows never overlap."""
    moment = now
    for _ in range(_MAX_STEPS):
        closed = [zone for zone in zones if not window.allows(moment.astimezone(zone))]
        if not closed:
            return None if moment == now else moment
        moment = max(window.next_open(moment.astimezone(zone)).astimezone(UTC) for zone in closed)
    opening = window.next_open(now.astimezone(fallback)).astimezone(UTC)
    return None if opening == now else opening


def zones_for(contact: str, fields: Mapping[str, Any], field: str, default: ZoneInfo) -> tuple[ZoneInfo, ...]:
    """A lead's candidate zones: its ``field`` when it names a zone, else its phone's, else ``default``."""
    named = fields.get(field)
    if isinstance(named, str) and named.strip():
        found = zone(named.strip())
        if found is not None:
            return (found,)
    if contact.startswith("+"):
        import phonenumbers  # here: a worker without quiet hours never loads its data
        from phonenumbers.timezone import time_zones_for_number

        try:
            number = phonenumbers.parse(contact, None)
        except phonenumbers.NumberParseException:
            return (default,)
        names = {n for n in time_zones_for_number(number) if n != _UNKNOWN_ZONE}
        if names and number.country_code in _LEGAL_TIME:
            names.add(_LEGAL_TIME[number.country_code])
        zones = tuple(z for z in (zone(n) for n in sorted(names)) if z is not None)
        if zones:
            return zones
    return (default,)
