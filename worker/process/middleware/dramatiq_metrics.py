"""Dramatiq's own metrics, with message durations in seconds.

Dramatiq's Prometheus middleware measures message durations in milliseconds, which
`promtool check metrics` refuses (Prometheus wants base units): this keeps every other
metric of it and records `dramatiq_message_duration_seconds` instead.

Its exposition server runs in a fork process of Dramatiq's, which Dramatiq's main process
does not watch: a SIGTERM to that process alone would end it and leave the worker serving
without metrics. So a SIGTERM there stops the whole worker, as one to any worker process does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware.prometheus import Prometheus, _run_exposition_server

__all__ = ["DramatiqMetrics", "run_exposition_server"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class DramatiqMetrics(Prometheus):
    @property
    def forks(self) -> list[Callable[[], int]]:
        return [run_exposition_server]

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        import prometheus_client as prom

        self.durations = prom.Histogram(
            "dramatiq_message_duration_seconds",
            "The time spent processing messages.",
            ["queue_name", "actor_name"],
            buckets=_BUCKETS,
            registry=prom.CollectorRegistry(),
        )
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        super().before_process_message(broker, message)  # type: ignore[no-untyped-call]
        self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, time.monotonic())
        self.message_start_times.pop(message.message_id, None)
        self.durations.labels(*labels).observe(time.monotonic() - started)
        self.inprogress_messages.labels(*labels).dec()
        self.total_messages.labels(*labels).inc()
        if exception is not None:
            self.total_errored_messages.labels(*labels).inc()

    after_skip_message = after_process_message


def run_exposition_server() -> int:
    """Dramatiq's exposition server, in the fork process Dramatiq starts for it.

    The server runs on a thread and this one waits for a stop signal, to know who sent it
    (a handler cannot): one from the main process is part of stopping the worker already,
    one from anyone else stops the main process too, which stops every other process.
    """
    main_process = os.getppid()
    stops = {signal.SIGTERM, signal.SIGHUP}
    # Blocked before the thread starts, which inherits the mask: the signals then wait for
    # sigtimedwait, which tells their sender, instead of running Dramatiq's handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    server = threading.Thread(target=_run_exposition_server, name="exposition", daemon=True)
    server.start()
    while server.is_alive():
        received = signal.sigtimedwait(stops, 1.0)
        if received is None:
            continue
        from_main = received.si_pid == main_process
        # An orphan's parent is someone else's (init): only the main process that started this one.
        if received.si_signo == signal.SIGTERM and not from_main and os.getppid() == main_process:
            os.kill(main_process, signal.SIGTERM)
        return 0
    # The server ended by itself (its port taken, say): its thread printed why.
    return 1
