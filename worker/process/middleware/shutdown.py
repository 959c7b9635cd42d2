"""A worker process ends within `--shutdown-timeout` however SIGTERM reaches it.

Dramatiq's worker process treats a second SIGTERM as "kill": it raises SystemExit wherever
its main thread is, mid-shutdown. A SIGTERM to the process group (systemd's default
KillMode, `timeout`, most supervisors) reaches each process twice, once from the sender and
once forwarded by Dramatiq's main process, so the second often lands while the first is
being honoured. The process then skipped Worker.stop, whose last step stops the AsyncIO
middleware's event loop thread, and that thread is no daemon: interpreter shutdown waited
for it forever, while the process's consumers went on taking messages.

So, here:
- the first of SIGTERM and SIGHUP reaches Dramatiq's handler and later ones do not: a
  shutdown is already bounded by `--shutdown-timeout`, and one that runs to its end hands
  back what it holds (prefetched messages requeued, acknowledgements flushed);
- the event loop runs on a daemon thread, stopped with a bound after the worker's shutdown,
  so that no path out of the process (an exception, a SystemExit at boot) waits for it.

Messages still in progress when the timeout ends are not acknowledged: the broker
redelivers them once this worker's heartbeat is old, and actors tolerate running twice.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import dramatiq
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.middleware import AsyncIO

from worker.logs.structured import get_logger

__all__ = ["LOOP_STOP_TIMEOUT", "DaemonAsyncIO", "OneShutdown", "stop_requested"]

log = get_logger(__name__)

LOOP_STOP_TIMEOUT = 2.0
"""Seconds the loop gets to finish its current iteration: longer only when something blocks it."""

#: The signals Dramatiq's worker process stops on (it ignores SIGINT; its main process
#: forwards SIGINT as SIGTERM).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

_Handler = Callable[[int, FrameType | None], Any]

stop_requested = threading.Event()
"""Set by the process's first stop signal: for whatever waits at boot (Redis away), which
Dramatiq's flag cannot reach and a repeated signal no longer cuts short."""


class OneShutdown(dramatiq.Middleware):
    """Lets the first stop signal of a worker process through to Dramatiq, and no other."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # Dramatiq installs its handlers just before this hook; a broker booted otherwise
        # (tests, a thread) has none of its own to guard, and only the main thread may set one.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):
                signal.signal(signum, self._once(handler))

    def _once(self, dramatiq_handler: _Handler) -> _Handler:
        def handler(signum: int, frame: FrameType | None) -> None:
            if not stop_requested.is_set():
                stop_requested.set()
                dramatiq_handler(signum, frame)
                return
            log.info(
                "already stopping: this signal changes nothing, the process ends within --shutdown-timeout",
                signal=signal.Signals(signum).name,
            )

        return handler


class DaemonAsyncIO(AsyncIO):
    """Dramatiq's AsyncIO middleware, its event loop on a daemon thread stopped with a bound."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        thread = EventLoopThread(self.logger)
        thread.daemon = True
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is None:
            return
        set_event_loop_thread(None)
        # The thread closes the loop itself once it has stopped (and then refuses the call).
        with contextlib.suppress(RuntimeError):
            thread.loop.call_soon_threadsafe(thread.loop.stop)
        thread.join(LOOP_STOP_TIMEOUT)
        if thread.is_alive():
            log.warning(
                "the event loop did not stop: something blocks it; the process exits without it",
                waited_s=LOOP_STOP_TIMEOUT,
            )
