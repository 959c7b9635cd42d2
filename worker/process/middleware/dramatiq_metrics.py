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
import time
from collections.abc import Callable
from types import FrameType
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
    """Dramatiq's exposition server, in the fork process Dramatiq starts for it, after the
    fork has installed its signal handlers."""
    main_process = os.getppid()
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    told = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal told
        # Once: the main process forwards SIGTERM to this process too. And only to the
        # process that started this one: an orphan's parent is someone else's (init).
        if not told and os.getppid() == main_process:
            told = True
            os.kill(main_process, signal.SIGTERM)
        if callable(dramatiq_handler):
            dramatiq_handler(signum, frame)

    if callable(dramatiq_handler):
        signal.signal(signal.SIGTERM, handler)
    code: int = _run_exposition_server()  # type: ignore[no-untyped-call]
    return code
