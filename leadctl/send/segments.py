"""How many SMS segments a text costs (3GPP TS 23.038 / 23.040).

A text written entirely in the GSM 03.38 default alphabet travels as GSM-7: 160 septets in one
segment, 153 per segment once concatenated; the extension table's characters (``€ [ ] { } ^ ~ | \\``
and form feed) take two septets each, and a segment never splits one. Any other character (``á``,
``ê``, an emoji) makes the whole text UCS-2: 70 UTF-16 units in one segment, 67 when concatenated,
and a surrogate pair is never split. The alphabet comes from the ``gsm0338`` codec's tables.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from gsm0338.charset import BASIC_CHARACTER_SET, BASIC_CHARACTER_SET_EXTENSION

_BASIC = frozenset(unicodedata.lookup(name) for name in BASIC_CHARACTER_SET.values()) - {"\x1b"}
_EXTENDED = frozenset(unicodedata.lookup(name) for name in BASIC_CHARACTER_SET_EXTENSION.values())
_GSM7 = _BASIC | _EXTENDED


def _parts(costs: Iterable[int], size: int) -> int:
    """Segments of ``size`` units filled greedily, a character's units never split."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > size:
            parts += 1
            used = 0
        used += cost
    return parts


def segments(text: str) -> int:
    """SMS segments needed to send ``text`` (an empty text still is one message)."""
    chars = set(text)
    if chars <= _GSM7:
        extended = chars & _EXTENDED
        septets = len(text) + sum(text.count(char) for char in extended)
        if septets <= 160:
            return 1
        if not extended:
            return -(-septets // 153)
        return _parts((2 if char in _EXTENDED else 1 for char in text), 153)
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return 1
    if units == len(text):
        return -(-units // 67)
    return _parts((2 if ord(char) > 0xFFFF else 1 for char in text), 67)
