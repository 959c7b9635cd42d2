"""A worker process whose boot fails ends before it has a consumer, and one that boots
reads the routing state only if it consumes the verifications queue
(worker/process/middleware/boot.py).

Unit tests: Dramatiq's StubBroker with the router's boot middleware, and a Redis client
that is never reached (the boot fails on its settings first, or builds a stand-in runtime).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO

from worker.core import keys
from worker.process.middleware import boot
from worker.process.middleware.boot import EXIT_CONFIGURATION, RuntimeBoot
from worker.process.runtime import Runtime
from worker.process.settings import Settings


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker(middleware=[AsyncIO(), RuntimeBoot(client=redis.Redis(port=1))])
    stub.declare_queue(keys.VERIFY_QUEUE)
    yield stub
    set_event_loop_thread(None)


def start(worker: Worker) -> SystemExit | None:
    """How Worker.start() ended the process, or None (after stopping the worker again, whose
    threads would otherwise keep the test session from exiting) when it did not."""
    try:
        worker.start()
    except SystemExit as exited:
        return exited
    worker.stop()
    return None


def test_a_process_without_its_code_secret_exits_with_status_2_before_any_consumer_starts(
    broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASHCALL_CODE_SECRET", raising=False)
    worker = Worker(broker, worker_threads=1)

    # SystemExit, not an Exception: Dramatiq logs and ignores those at boot.
    exited = start(worker)

    assert exited is not None
    assert exited.code == EXIT_CONFIGURATION
    assert worker.consumers == {}
    assert worker.workers == []


def test_a_process_whose_boot_fails_stops_its_event_loop_so_that_it_can_exit(
    broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASHCALL_CODE_SECRET", raising=False)

    assert start(Worker(broker, worker_threads=1)) is not None
    thread = get_event_loop_thread()
    assert thread is not None
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("queues", "routes"),
    [(None, True), ({keys.VERIFY_QUEUE}, True), ({keys.CHECK_QUEUE}, False)],
    ids=["every queue", "verifications", "checks only"],
)
def test_only_a_process_that_consumes_the_verifications_queue_reads_the_routing_state(
    broker: StubBroker, monkeypatch: pytest.MonkeyPatch, queues: set[str] | None, routes: bool
) -> None:
    broker.declare_queue(keys.CHECK_QUEUE)
    booted: list[bool] = []

    async def runtime_start(settings: Settings, environ: object = None, *, routes: bool) -> SimpleNamespace:
        booted.append(routes)

        async def stop() -> None:
            return None

        return SimpleNamespace(stop=stop)

    monkeypatch.setenv("FLASHCALL_CODE_SECRET", "s" * 16)
    monkeypatch.setattr(boot, "install", lambda client: None)
    monkeypatch.setattr(Runtime, "start", runtime_start)

    assert start(Worker(broker, worker_threads=1, queues=queues)) is None

    assert booted == [routes]
