"""Which PostgreSQL backends serve given client processes: for benchmarks that charge each
process's database work to it (found through the processes' TCP sockets)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
import psycopg


def client_backends(conn: psycopg.Connection, processes: Iterable[psutil.Process], port: int) -> set[int]:
    """PIDs of the backends connected to ``processes`` (PostgreSQL listening on ``port``)."""
    ports = []
    for process in processes:
        try:
            sockets = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        ports += [s.laddr.port for s in sockets if s.raddr and s.raddr.port == port]
    if not ports:
        return set()
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)).fetchall()
    return {pid for (pid,) in rows}
