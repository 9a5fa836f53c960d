"""Opt-out replies: does an inbound message say "stop"?

A reply opts out when, ignoring case, accents, surrounding spaces and punctuation, it is exactly
one of the keywords (as carriers and Twilio's Advanced Opt-Out read them: "Pare!" and " sair "
opt out; "não pare de mandar" does not). The keywords are ``optout.keywords``, by default
leadctl.config.DEFAULT_OPTOUT_KEYWORDS.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def fold(text: str) -> str:
    """Upper case, no accents, spaces collapsed, no punctuation at the ends: ' Não quero! ' -> 'NAO QUERO'."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _EDGES.sub("", " ".join(bare.casefold().upper().split()))


class OptOutKeywords:
    """The configured keywords, folded once."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._folded = frozenset(fold(k) for k in keywords if fold(k))

    def matches(self, text: str | None) -> bool:
        """True when ``text`` is one of the keywords (see the module doc)."""
        return bool(text) and fold(text or "") in self._folded
