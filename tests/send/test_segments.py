"""SMS segment counting (GSM-7 160/153 with the extension table, UCS-2 70/67) and its column."""

from __future__ import annotations

import psycopg
import pytest

from leadctl.send.segments import segments
from leadctl.store.migrations import migrate, quoted_schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà", 1),  # all GSM-7
        ("€" * 80, 1),  # extension characters count twice
        ("€" * 81, 2),
        ("[" + "a" * 159, 2),
        ("a" * 152 + "€" + "a" * 10, 2),  # € does not fit in the first 153: moves whole
        ("a" * 305 + "{", 3),
        ("á" * 70, 1),  # one non-GSM character: UCS-2
        ("á" * 71, 2),
        ("á" * 134, 2),
        ("á" * 135, 3),
        ("Olá Ana! " + "a" * 60, 1),
        ("😀" * 35, 1),  # a surrogate pair is two UTF-16 units
        ("😀" * 36, 2),
        ("a" * 66 + "😀" + "a" * 66, 3),  # the pair never splits: 66 | 2+65 | 1
        ("`", 1),  # backtick is not GSM-7
    ],
)
def test_segments(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_deliveries_have_a_segments_column(pg: psycopg.Connection, namespace: str) -> None:
    migrate(pg, namespace)
    schema = quoted_schema(namespace)
    column = pg.execute(
        "SELECT data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'deliveries' AND column_name = 'segments'",
        (namespace,),
    ).fetchone()
    assert column == ("integer", "YES")
    assert pg.execute(f"SELECT max(version) FROM {schema}.schema_migrations").fetchone()[0] >= 2
