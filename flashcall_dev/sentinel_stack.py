"""A Redis Sentinel group on free ports: one primary, one replica and three sentinels.

For the tests and fault scenarios that fail Redis over: the processes are the system's
`redis-server` and `redis-sentinel` (Debian: apt-get install redis-server redis-sentinel),
without persistence, in a directory of their own, stopped with the group. Sentinels
decide quickly (down after 1 s, quorum 2), so a failover takes a few seconds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from flashcall_dev.stack import ManagedProcess, _spawn, _wait_until, free_port
from worker.core.errors import FlashcallError
from worker.redis.connections import SENTINEL_SCHEME

__all__ = ["SENTINEL_INSTALL_HINT", "SERVICE", "SentinelGroup", "sentinel_group"]

SERVICE = "flashcall"
SENTINEL_INSTALL_HINT = (
    "redis-sentinel is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-sentinel; "
    "macOS: it comes with brew install redis)."
)
#: How long a primary must be silent before the sentinels call it down, and the bound
#: on each failover stage; small, so that tests fail over in seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000


@dataclass
class SentinelGroup:
    log_dir: Path
    sentinel_ports: list[int]
    nodes: dict[int, ManagedProcess] = field(default_factory=dict)
    """The redis-servers by port."""
    sentinels: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The REDIS_URL that reaches the group's primary through its sentinels."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"{SENTINEL_SCHEME}://{hosts}/{SERVICE}/0"

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], decode_responses=True, socket_timeout=2)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2)

    def primary_port(self) -> int:
        """The primary every sentinel names (waits until they agree)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ports = set()
            for index in range(len(self.sentinel_ports)):
                with contextlib.suppress(redis.RedisError), self.sentinel(index) as sentinel:
                    address = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    ports.add(int(address[1]) if address else 0)
            if len(ports) == 1 and 0 not in ports:
                return ports.pop()
            time.sleep(0.1)
        raise FlashcallError(f"the sentinels do not agree on a primary:\n{self.sentinels[0].log_tail()}")

    def replica_ports(self) -> list[int]:
        primary = self.primary_port()
        return [port for port, node in self.nodes.items() if port != primary and node.process.poll() is None]

    def wait_for_replica(self, *, timeout: float = 30) -> int:
        """A replica in sync with the primary, that every sentinel could promote; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FlashcallError, redis.RedisError):
                primary = self.primary_port()
                for port in self.replica_ports():
                    with self.node(port) as node:
                        replication = node.info("replication")
                    if (
                        replication.get("master_port") == primary
                        and replication.get("master_link_status") == "up"
                    ) and all(
                        self._sentinel_sees_replica(index, port) for index in range(len(self.sentinels))
                    ):
                        return port
            time.sleep(0.1)
        raise FlashcallError(f"no replica in sync after {timeout:.0f}s:\n{self.sentinels[0].log_tail()}")

    def _sentinel_sees_replica(self, index: int, port: int) -> bool:
        with self.sentinel(index) as sentinel:
            replicas = sentinel.sentinel_slaves(SERVICE)
        return any(
            int(state["port"]) == port and not state["is_sdown"] and not state["is_disconnected"]
            for state in replicas
        )

    def failover(self, *, timeout: float = 30) -> int:
        """SENTINEL FAILOVER, with the old primary still up; returns the new primary's port
        once it takes writes and every sentinel names it."""
        self.wait_for_replica(timeout=timeout)
        old = self.primary_port()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.sentinel() as sentinel:
                    sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
                break
            except redis.ResponseError:
                # NOGOODSLAVE until the sentinel has refreshed what it knows of the replica.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self.wait_for_new_primary(old, timeout=timeout)

    def planned_failover(self, *, timeout: float = 30) -> int:
        """A failover for maintenance that loses no acknowledged write, as docs/operations.md
        tells operators to make one; returns the new primary's port.

        SENTINEL FAILOVER alone loses what the old primary took after the replica stopped
        copying it: writes still in the replication stream, and writes clients send it
        until they learn of the new primary. So writes are held first (CLIENT PAUSE WRITE:
        a held write waits, it is not refused), the replica catches up, the sentinels
        promote it, and the old primary is made a replica at once instead of ~8 s later;
        closing its clients drops the writes it held, never run, and their clients send
        them again to the new primary."""
        self.wait_for_replica(timeout=timeout)
        old = self.primary_port()
        with self.node(old) as primary:
            primary.execute_command("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
            try:
                self._wait_until_copied(old, timeout=timeout)
                new = self.failover(timeout=timeout)
                primary.execute_command("REPLICAOF", "127.0.0.1", new)
                primary.execute_command("CLIENT", "KILL", "TYPE", "normal")
            finally:
                primary.execute_command("CLIENT", "UNPAUSE")
        return new

    def _wait_until_copied(self, primary: int, *, timeout: float) -> None:
        """Until every replica has applied all the primary wrote."""
        deadline = time.monotonic() + timeout
        with self.node(primary) as node:
            written = int(node.info("replication")["master_repl_offset"])
        while time.monotonic() < deadline:
            behind = []
            for port in self.replica_ports():
                with self.node(port) as replica:
                    if int(replica.info("replication").get("slave_repl_offset", -1)) < written:
                        behind.append(port)
            if not behind:
                return
            time.sleep(0.01)
        raise FlashcallError(f"the replicas did not catch up with the primary within {timeout:.0f}s")

    def pause(self, port: int) -> None:
        """SIGSTOP a node: it holds its connections and answers nothing, as a hung host."""
        os.kill(self.nodes[port].process.pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.nodes[port].process.pid, signal.SIGCONT)

    def wait_until_down(self, port: int, *, timeout: float = 10) -> None:
        """Until every sentinel holds the replica on `port` for down (and so unfit to promote)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            down = 0
            for index in range(len(self.sentinels)):
                with contextlib.suppress(redis.RedisError), self.sentinel(index) as sentinel:
                    replicas = sentinel.sentinel_slaves(SERVICE)
                    down += any(int(state["port"]) == port and state["is_sdown"] for state in replicas)
            if down == len(self.sentinels):
                return
            time.sleep(0.1)
        raise FlashcallError(f"the sentinels still see {port} up after {timeout:.0f}s")

    def kill_primary(self) -> int:
        """kill -9 the primary, as a crash of its host would; returns its port."""
        port = self.primary_port()
        self.nodes[port].kill()
        return port

    def wait_for_new_primary(self, old: int, *, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FlashcallError, redis.RedisError):
                port = self.primary_port()
                if port != old:
                    with self.node(port) as node:
                        if node.info("replication")["role"] == "master":
                            return port
            time.sleep(0.1)
        raise FlashcallError(f"no new primary after {timeout:.0f}s:\n{self.sentinels[0].log_tail()}")

    def restart(self, port: int) -> None:
        """Start a killed node again, as a replica of the current primary."""
        self.nodes[port] = _start_node(self.log_dir, port, replica_of=self.primary_port())

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes.values()]:
            process.stop()


def _start_node(log_dir: Path, port: int, *, replica_of: int | None = None) -> ManagedProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        from flashcall_dev.stack import REDIS_INSTALL_HINT

        raise FlashcallError(REDIS_INSTALL_HINT)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(log_dir)]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    process = _spawn(f"redis-{port}", argv, os.environ, log_dir)
    client = redis.Redis(port=port)
    try:
        _wait_until(lambda: bool(client.ping()), timeout=10, what="redis-server", process=process)
    finally:
        client.close()
    return process


def _sentinel_config(log_dir: Path, port: int, primary: int) -> Path:
    path = log_dir / f"sentinel-{port}.conf"
    # The sentinel rewrites this file as it learns the group: it must be its own and writable.
    path.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {log_dir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def sentinel_group(log_dir: Path) -> Iterator[SentinelGroup]:
    """Start the group; yields it once every sentinel knows the replica and the others."""
    binary = shutil.which("redis-sentinel")
    if binary is None:
        raise FlashcallError(SENTINEL_INSTALL_HINT)
    log_dir.mkdir(parents=True, exist_ok=True)
    group = SentinelGroup(log_dir=log_dir, sentinel_ports=[free_port() for _ in range(3)])
    try:
        primary = free_port()
        group.nodes[primary] = _start_node(log_dir, primary)
        replica = free_port()
        group.nodes[replica] = _start_node(log_dir, replica, replica_of=primary)
        for port in group.sentinel_ports:
            config = _sentinel_config(log_dir, port, primary)
            group.sentinels.append(_spawn(f"sentinel-{port}", [binary, str(config)], os.environ, log_dir))
        for index, process in enumerate(group.sentinels):
            _wait_until(
                functools.partial(_sees_everyone, group, index), timeout=30, what="sentinel", process=process
            )
        yield group
    finally:
        group.stop()


def _sees_everyone(group: SentinelGroup, index: int) -> bool:
    with group.sentinel(index) as sentinel:
        state = sentinel.sentinel_master(SERVICE)
    return int(state["num-slaves"]) >= 1 and int(state["num-other-sentinels"]) >= 2
