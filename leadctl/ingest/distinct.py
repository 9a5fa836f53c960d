"""Counting distinct contacts without a database (``ingest --dry-run``), in about 8 bytes each.

A Python set of a million 64-bit hashes takes about 60 MB; here the hashes are spread over 256
arrays of unsigned 64-bit integers by their low byte and each array is de-duplicated only when
asked for the count, through a set of its own (a few thousand entries at a time).
"""

from __future__ import annotations

from array import array

_PARTS = 256


class DistinctCounter:
    """How many distinct 8-byte keys were added (collisions of 64-bit hashes aside)."""

    def __init__(self) -> None:
        self._parts = [array("Q") for _ in range(_PARTS)]

    def add(self, keys: bytes) -> None:
        """Add keys given as concatenated 8-byte strings."""
        parts = self._parts
        for key in array("Q", keys):
            parts[key & 0xFF].append(key)

    def count(self) -> int:
        """Distinct keys so far (de-duplicates the stored keys in place)."""
        total = 0
        for index, part in enumerate(self._parts):
            unique = set(part)
            if len(unique) != len(part):
                self._parts[index] = array("Q", unique)
            total += len(unique)
        return total
