"""Check processes: some of `flashcall worker`'s processes answer code checks only.

When providers are slow, a worker process keeps the CPU busy with hundreds of calls in
flight, and a check it also answered waited behind them: up to 80 ms at p99 on a
saturated 2-core host (docs/benchmarks.md). So `flashcall worker` asks Dramatiq for
`--check-processes` more processes and, as each boots, the first ones to claim a slot
consume only the check queue; the others consume only the verification queue, at a
lower CPU priority (`--nice`). The kernel then runs a check process as soon as a check
arrives, and a check is answered in milliseconds whatever the load.

All of them stay ordinary Dramatiq worker processes: if one dies, Dramatiq's main
process stops the rest and the worker exits for its supervisor to restart.

One process of each `flashcall worker`, the first to ask (claim_reporter), also reports
what every process of it would read alike: the queue gauges and the library's counts
(worker/process/runtime.py). Its exposition then shows them fresh, once, at a fraction of
the Redis commands.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import dramatiq

from worker.core import keys
from worker.core.errors import ConfigurationError
from worker.logs.structured import get_logger

__all__ = ["CHECK_PROCESSES", "CHECK_THREADS", "ROLES_DIR", "WORKER_NICE", "ProcessRoles", "claim_reporter"]

CHECK_PROCESSES = "FLASHCALL_CHECK_PROCESSES"
WORKER_NICE = "FLASHCALL_WORKER_NICE"
ROLES_DIR = "FLASHCALL_ROLES_DIR"
"""Where the check slots' lock files are: one directory per `flashcall worker`."""

CHECK_THREADS = 256
"""Checks a check process answers at once. Most take one Redis call; those a provider
judges (Telphin) hold their thread while its API answers, so that a process answers at
most CHECK_THREADS / that latency of them a second: with 32 threads and the sandbox at
500 ms, 68 approvals/s of Telphin's codes, whatever else the host could do. 256 carry
440/s there, for 0.8% of a core more when idle (each thread wakes once a second) and
12 MB of RSS."""

log = get_logger(__name__)

#: The reporter's lock, held for the life of the process that took it.
_held: list[IO[str]] = []


class ProcessRoles(dramatiq.Middleware):
    """Must come first: the nice value set at boot is inherited only by threads started
    after it, and other middleware start threads (AsyncIO's event loop) at boot."""

    def __init__(self) -> None:
        self._slot: IO[str] | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        slots = _whole_number(CHECK_PROCESSES, 0, 64)
        if not slots:
            return
        directory = os.environ.get(ROLES_DIR)
        if not directory:
            raise ConfigurationError(
                f"{CHECK_PROCESSES} needs {ROLES_DIR}: run workers with `flashcall worker`"
            )
        self._slot = _claim_slot(Path(directory), slots)
        if self._slot is not None:
            worker.consumer_whitelist = {keys.CHECK_QUEUE}
            worker.worker_threads = CHECK_THREADS
            worker.queue_prefetch = 2 * CHECK_THREADS
            log.info("check process", threads=CHECK_THREADS)
            return
        worker.consumer_whitelist = {keys.VERIFY_QUEUE}
        os.nice(_whole_number(WORKER_NICE, 0, 19))


def claim_reporter(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process reports for its `flashcall worker`: the first to ask does, until
    it exits. Run otherwise than by `flashcall worker` (no roles directory), every process does."""
    directory = (os.environ if environ is None else environ).get(ROLES_DIR)
    if not directory:
        return True
    handle = _lock(Path(directory) / "reporter.lock")
    if handle is None:
        return False
    _held.append(handle)
    return True


def _claim_slot(directory: Path, slots: int) -> IO[str] | None:
    """A check slot's lock, held until this process exits; None when all are taken."""
    for slot in range(slots):
        handle = _lock(directory / f"check-{slot}.lock")
        if handle is not None:
            return handle
    return None


def _lock(path: Path) -> IO[str] | None:
    """The file, locked until it is closed (by the kernel, when the process exits); None
    when another holds it."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _whole_number(name: str, low: int, high: int) -> int:
    raw = os.environ.get(name) or "0"
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigurationError(f"{name} must be a whole number from {low} to {high}, not {raw!r}")
    return int(raw)
