"""A worker process's shutdown cannot be cut short by a repeated signal nor held up by its
event loop (worker/process/middleware/shutdown.py), and closes its runtime only under no
message in progress (worker/process/middleware/boot.py).

Unit tests: Dramatiq's StubBroker and Worker in this process, signals sent to this process.
The end-to-end behaviour, with `flashcall worker`'s real processes, is in
tests/integration/test_worker_signals.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType, SimpleNamespace

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker

from worker.core import keys
from worker.process.middleware import boot, shutdown
from worker.process.middleware.boot import RuntimeBoot
from worker.process.middleware.shutdown import DaemonAsyncIO, OneShutdown
from worker.process.runtime import Runtime
from worker.process.settings import Settings


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
    shutdown.stop_requested.clear()


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


def test_the_first_stop_signal_is_told_to_what_waits_at_boot(stop_signals: list[int]) -> None:
    OneShutdown().after_process_boot(StubBroker())
    assert not shutdown.stop_requested.is_set()

    deliver(signal.SIGTERM)

    assert shutdown.stop_requested.is_set()


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


class Call:
    """An actor's call in progress: started, then released by the test."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runtime_open_at_its_end: bool | None = None


@pytest.fixture
def booted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[StubBroker, Call, list[str]]]:
    """A broker whose runtime is a stand-in recording its stop, and an actor that holds its
    thread until released: (broker, the call, what happened to the runtime)."""
    closed: list[str] = []

    async def runtime_start(settings: Settings, environ: object = None, *, routes: bool) -> SimpleNamespace:
        async def stop() -> None:
            closed.append("closed")

        return SimpleNamespace(stop=stop)

    monkeypatch.setenv("FLASHCALL_CODE_SECRET", "s" * 16)
    monkeypatch.setattr(boot, "install", lambda client: None)
    monkeypatch.setattr(Runtime, "start", runtime_start)
    stub = StubBroker(middleware=[DaemonAsyncIO(), RuntimeBoot(client=redis.Redis(port=1))])
    stub.declare_queue(keys.VERIFY_QUEUE)
    call = Call()

    @dramatiq.actor(broker=stub, queue_name=keys.VERIFY_QUEUE, actor_name="hold")
    def hold() -> None:
        call.started.set()
        call.release.wait(10)
        call.runtime_open_at_its_end = not closed

    yield stub, call, closed
    call.release.set()
    set_event_loop_thread(None)


def test_the_runtime_is_closed_once_the_message_in_progress_is_finished(
    booted: tuple[StubBroker, Call, list[str]],
) -> None:
    broker, call, closed = booted
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    broker.actors["hold"].send()
    assert call.started.wait(5)
    threading.Timer(0.3, call.release.set).start()

    worker.stop(timeout=5000)

    assert call.runtime_open_at_its_end is True
    assert closed == ["closed"]


def test_the_runtime_is_left_open_under_a_message_still_in_progress_at_the_shutdown_timeout(
    booted: tuple[StubBroker, Call, list[str]],
) -> None:
    broker, call, closed = booted
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    broker.actors["hold"].send()
    assert call.started.wait(5)

    worker.stop(timeout=200)

    assert closed == []
