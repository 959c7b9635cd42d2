"""A worker process's shutdown cannot be cut short by a repeated signal nor held up by its
event loop (worker/process/middleware/shutdown.py).

Unit tests: Dramatiq's StubBroker and Worker in this process, signals sent to this process.
The end-to-end behaviour, with `flashcall worker`'s real processes, is in
tests/integration/test_worker_signals.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from types import FrameType

import pytest
from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker

from worker.process.middleware import shutdown
from worker.process.middleware.shutdown import DaemonAsyncIO, OneShutdown


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker(middleware=[DaemonAsyncIO()])
    yield stub
    set_event_loop_thread(None)


@pytest.fixture
def stop_signals() -> Iterator[list[int]]:
    """Dramatiq's handler as a recorder of the signals it was given, restored afterwards."""
    received: list[int] = []

    def dramatiq_handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, dramatiq_handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    yield received
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    # Python runs the handler in the main thread at its next bytecode boundary.
    time.sleep(0.01)


def test_the_first_stop_signal_reaches_dramatiq_and_repeated_ones_do_not(stop_signals: list[int]) -> None:
    OneShutdown().after_process_boot(StubBroker())

    deliver(signal.SIGTERM)
    deliver(signal.SIGTERM)
    deliver(signal.SIGHUP)

    assert stop_signals == [signal.SIGTERM]


def test_the_event_loop_runs_on_a_daemon_thread_and_stops_with_the_worker(broker: StubBroker) -> None:
    worker = Worker(broker, worker_threads=1)
    worker.start()
    thread = get_event_loop_thread()
    assert thread is not None
    assert thread.daemon

    worker.stop()

    assert not thread.is_alive()
    assert get_event_loop_thread() is None


def test_an_event_loop_that_something_blocks_does_not_hold_up_the_shutdown(
    broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutdown, "LOOP_STOP_TIMEOUT", 0.2)
    worker = Worker(broker, worker_threads=1)
    worker.start()
    thread = get_event_loop_thread()
    assert thread is not None

    async def block() -> None:
        time.sleep(4)  # a blocking call in a coroutine: what stalls a loop

    asyncio.run_coroutine_threadsafe(block(), thread.loop)
    began = time.monotonic()
    worker.stop()

    # Dramatiq's own part of the stop takes up to a second (its threads poll that often).
    assert time.monotonic() - began < 3.0
    thread.join(5)
