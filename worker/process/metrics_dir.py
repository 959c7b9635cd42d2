"""The metrics directory and port of one `flashcall worker`, claimed before either is used.

The processes of a worker write multiprocess Prometheus files into one directory, emptied
at start (files of an earlier run would be summed with this one's), and Dramatiq serves
them on one port. A second worker given the same directory used to empty it under the
first one, whose /metrics then lost every flashcall_ series, and then failed on the port.
So a worker locks the directory for its lifetime (flock on a file inside it, inherited by
every process it forks: the lock lasts while any of them lives) and tries the port, and
only then empties the directory; a worker that finds either taken refuses, touching nothing.

Standard library only: it runs before prometheus-client is imported, which reads the
directory from the environment on import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import IO

from worker.core.errors import ConfigurationError

__all__ = ["LOCK_FILE", "claim_metrics"]

#: Inside the directory, so that whoever finds it taken can read who holds it.
LOCK_FILE = "worker.lock"

#: Held for the life of the process (and of the processes it forks).
_held: list[IO[str]] = []

_OPTIONS = (
    "give this one a --metrics-dir and a --metrics-port of its own "
    "(or FLASHCALL_METRICS_DIR and FLASHCALL_METRICS_PORT)"
)


def claim_metrics(directory: Path, port: int, *, host: str | None = None) -> None:
    """Lock `directory` for this worker, check that `port` is free on `host` (by default where
    Dramatiq's exposition server listens), then empty the directory but for its lock;
    ConfigurationError, with nothing touched, when either is taken."""
    if host is None:
        host = os.environ.get("dramatiq_prom_host", "0.0.0.0")  # noqa: S104, SIM112 - Dramatiq's own
    directory.mkdir(parents=True, exist_ok=True)
    handle = (directory / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another worker"
        handle.close()
        raise ConfigurationError(f"{holder} uses the metrics directory {directory}: {_OPTIONS}") from None
    try:
        _check_port(host, port)
    except ConfigurationError:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"the worker with pid {os.getpid()} (metrics on port {port})")
    handle.flush()
    _held.append(handle)
    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def _check_port(host: str, port: int) -> None:
    """As Dramatiq's exposition server will bind it (SO_REUSEADDR, as http.server does, so that
    an earlier run's connections in TIME_WAIT do not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise ConfigurationError(
                    f"the metrics port {port} cannot be used: {error.strerror}"
                ) from None
            raise ConfigurationError(
                f"the metrics port {port} is in use (another worker's metrics?): {_OPTIONS}"
            ) from None
