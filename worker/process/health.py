"""Liveness and readiness for `flashcall health` (Kubernetes exec probes).

Each worker process touches a heartbeat file of its own (named after its pid) in the
health directory every few seconds, from a task on its event loop: a process whose loop
is wedged stops touching it, as does one that died. The worker is alive while at least
one heartbeat is fresher than the threshold. Ready also needs every process to have
booted (one that waits for Redis at boot leaves a marker saying so, worker/process/
middleware/boot.py), Redis to answer PING and the routing file to load.

Kept light: the probe runs every few seconds in every pod, so this module imports
nothing beyond the standard library at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_MAX_AGE",
    "HEALTH_DIR",
    "HEARTBEAT_INTERVAL",
    "Heartbeat",
    "health_dir",
    "liveness",
    "readiness",
    "waiting",
]

#: The environment variable naming the directory of heartbeat files.
HEALTH_DIR = "FLASHCALL_HEALTH_DIR"
DEFAULT_DIR = "/tmp/flashcall-health"  # noqa: S108 - a per-container directory (an emptyDir in Kubernetes)
#: Seconds between a process's heartbeats.
HEARTBEAT_INTERVAL = 5.0
#: A heartbeat older than this (seconds) is a process that is dead or wedged.
DEFAULT_MAX_AGE = 30.0

_ALIVE = ".alive"
_WAITING = ".waiting"


def health_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(HEALTH_DIR) or DEFAULT_DIR)


class Heartbeat:
    """One process's heartbeat file: touched by `beat`, removed by `remove` at a clean stop;
    and, while the process waits to boot, a marker saying what it waits for (`waiting`),
    removed once it has (`booted`)."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        name = str(os.getpid() if pid is None else pid)
        self.path = directory / f"{name}{_ALIVE}"
        self.waiting_path = directory / f"{name}{_WAITING}"

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def waiting(self, reason: str) -> None:
        """Written at every boot attempt: a marker older than the heartbeat limit is one a
        killed process left, which readiness ignores."""
        with contextlib.suppress(OSError):
            self.waiting_path.parent.mkdir(parents=True, exist_ok=True)
            self.waiting_path.write_text(reason, encoding="utf-8")

    def booted(self) -> None:
        self.waiting_path.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.waiting_path.unlink(missing_ok=True)

    async def run(self, interval: float = HEARTBEAT_INTERVAL) -> None:
        """Beat every `interval` seconds until cancelled; on the event loop on purpose (a
        blocked loop must stop the heartbeat). A full or read-only disk skips a beat."""
        while True:
            with contextlib.suppress(OSError):
                self.beat()
            await asyncio.sleep(interval)


def liveness(directory: Path, *, max_age: float, now: Callable[[], float] = time.time) -> str | None:
    """None when at least one heartbeat in `directory` is at most `max_age` seconds old;
    otherwise why not, in one line."""
    try:
        ages = [now() - entry.stat().st_mtime for entry in directory.glob(f"*{_ALIVE}")]
    except OSError as error:
        return f"cannot read heartbeats in {directory}: {error}"
    if not ages:
        return f"no worker process heartbeat in {directory}"
    youngest = min(ages)
    if youngest > max_age:
        return f"the freshest worker process heartbeat is {youngest:.0f} s old (limit {max_age:.0f} s)"
    return None


def waiting(directory: Path, *, max_age: float, now: Callable[[], float] = time.time) -> str | None:
    """What a worker process that has not booted yet waits for (Redis), in one line; None
    when none waits. Markers older than `max_age` are those of processes killed meanwhile."""
    try:
        markers = sorted(directory.glob(f"*{_WAITING}"))
        for marker in markers:
            if now() - marker.stat().st_mtime <= max_age:
                reason = marker.read_text(encoding="utf-8").strip()
                return f"worker process {marker.name.removesuffix(_WAITING)} has not booted: {reason}"
    except OSError:
        # Removed as it booted, between the listing and the read: that one is no longer waiting.
        return None
    return None


def readiness(
    redis_url: str, routing_path: Path, *, directory: Path | None = None, max_age: float = DEFAULT_MAX_AGE
) -> str | None:
    """None when no worker process in `directory` (the heartbeats') waits to boot, Redis
    answers PING and the routing file loads; otherwise why not."""
    import redis

    from worker.core.errors import FlashcallError
    from worker.redis.connections import RedisTarget, sync_client
    from worker.routing import load_routing

    if directory is not None:
        problem = waiting(directory, max_age=max_age)
        if problem is not None:
            return problem
    try:
        load_routing(routing_path)
    except (FlashcallError, OSError, ValueError) as error:
        return f"the routing file {routing_path} does not load: {error}"
    try:
        client = sync_client(RedisTarget.parse(redis_url), socket_timeout=3, socket_connect_timeout=3)
    except FlashcallError as error:
        return str(error)
    try:
        client.ping()
    except redis.RedisError as error:
        return f"Redis does not answer: {error}"
    finally:
        client.close()
    return None
