"""What leadctl left behind in PostgreSQL and Redis, read the way the assertions need it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import psycopg
import redis

from leadctl.queue import keys


def statuses(pg: psycopg.Connection, namespace: str, channel: str | None = "sms") -> Counter[str]:
    """Leads per delivery status, of one channel (None: every channel)."""
    where, params = ("WHERE channel = %s", (channel,)) if channel is not None else ("", ())
    rows = pg.execute(
        f'SELECT status, count(*) FROM "{namespace}".lead_deliveries {where} GROUP BY 1', params
    ).fetchall()
    return Counter(dict(rows))


def queued_contacts(
    pg: psycopg.Connection, client: redis.Redis, namespace: str, channel: str = "sms"
) -> list[str]:
    """The contacts of the leads in the channel's stream, in stream order (each checked queued in PG)."""
    entries = client.xrange(keys.stream(namespace, channel))
    ids = [int(fields[b"l"]) for _, fields in entries]
    rows = dict(
        pg.execute(
            f'SELECT l.id, l.contact FROM "{namespace}".leads l JOIN "{namespace}".lead_deliveries d '
            "ON d.lead_id = l.id WHERE d.status = 'queued' AND l.id = ANY(%s)",
            (ids,),
        ).fetchall()
    )
    assert set(rows) == set(ids), "every stream entry is a queued lead"
    return [rows[i] for i in ids]


def assert_sent_at_most_once(
    pg: psycopg.Connection, namespace: str, messages: Iterable[dict[str, object]]
) -> None:
    """Each lead reached the provider at most once; those recorded sent did, the others are in doubt."""
    received = Counter(m["to"] for m in messages)
    assert max(received.values()) == 1, "a lead was sent twice"
    by_status = dict(
        pg.execute(
            f'SELECT d.status, array_agg(l.contact) FROM "{namespace}".lead_deliveries d '
            f'JOIN "{namespace}".leads l ON l.id = d.lead_id GROUP BY 1'
        ).fetchall()
    )
    assert set(by_status) <= {"sent", "in_doubt"}, by_status.keys()
    assert set(by_status["sent"]) <= set(received)
    assert set(received) - set(by_status["sent"]) <= set(by_status.get("in_doubt", []))
