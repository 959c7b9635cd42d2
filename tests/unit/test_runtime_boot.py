"""A worker process whose boot fails ends before it has a consumer, one that finds Redis
away waits for it with its consumers held back, and one that boots reads the routing state
only if it consumes the verifications queue (worker/process/middleware/boot.py).

Unit tests: Dramatiq's StubBroker with the router's boot middleware, and a Redis client
that is never reached (the boot fails on its settings first, or builds a stand-in runtime).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO
from structlog.testing import capture_logs

from worker.core import keys
from worker.process.health import liveness, waiting
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


class Redis:
    """Stands for Redis at boot: away (refusing connections) until `start`."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.installs = 0
        self.refusal: Exception | None = None

    def install(self, client: object) -> None:
        self.installs += 1
        if not self.up.is_set():
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if self.refusal is not None:
            raise self.refusal


@pytest.fixture
def away(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Redis:
    server = Redis()

    async def runtime_start(settings: Settings, environ: object = None, *, routes: bool) -> SimpleNamespace:
        async def stop() -> None:
            return None

        return SimpleNamespace(stop=stop)

    monkeypatch.setenv("FLASHCALL_CODE_SECRET", "s" * 16)
    monkeypatch.setenv("FLASHCALL_HEALTH_DIR", str(tmp_path))
    monkeypatch.setattr(boot, "install", server.install)
    monkeypatch.setattr(Runtime, "start", runtime_start)
    return server


@pytest.fixture
def waiting_broker() -> Iterator[StubBroker]:
    """Retries every 20 ms, and warns at most once an hour while it waits."""
    stub = StubBroker(
        middleware=[
            AsyncIO(),
            RuntimeBoot(client=redis.Redis(port=1), retry_delays=(0.02,), warning_interval=3600),
        ]
    )
    stub.declare_queue(keys.VERIFY_QUEUE)
    yield stub
    set_event_loop_thread(None)


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def taken(waiting_broker: StubBroker) -> list[str]:
    """What the worker has processed, of the messages sent to `record`."""
    processed: list[str] = []

    @dramatiq.actor(broker=waiting_broker, queue_name=keys.VERIFY_QUEUE, actor_name="record")
    def record(value: str) -> None:
        processed.append(value)

    return processed


def test_a_process_that_finds_redis_away_at_boot_waits_instead_of_exiting(
    waiting_broker: StubBroker, away: Redis
) -> None:
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)

    assert start_and_keep(worker) is None
    try:
        assert eventually(lambda: away.installs >= 3)
    finally:
        worker.stop()


def test_a_process_waiting_for_redis_takes_no_message_until_it_has_booted(
    waiting_broker: StubBroker, away: Redis, taken: list[str]
) -> None:
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)
    start_and_keep(worker)
    try:
        waiting_broker.actors["record"].send("sent while Redis was away")
        assert eventually(lambda: away.installs >= 3)
        assert taken == []

        away.up.set()

        assert eventually(lambda: taken == ["sent while Redis was away"])
        assert waiting_broker.dead_letters == []
    finally:
        worker.stop()


def test_a_process_waiting_for_redis_warns_once_per_interval_not_at_every_attempt(
    waiting_broker: StubBroker, away: Redis
) -> None:
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)
    with capture_logs() as logs:
        start_and_keep(worker)
        try:
            assert eventually(lambda: away.installs >= 5)
        finally:
            worker.stop()

    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "waiting for Redis" in warnings[0]["event"]
    assert "Connection refused" in warnings[0]["error"]


def test_a_process_waiting_for_redis_is_alive_and_marked_not_booted_until_it_has(
    waiting_broker: StubBroker, away: Redis, tmp_path: Path
) -> None:
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)
    start_and_keep(worker)
    try:
        assert eventually(lambda: waiting(tmp_path, max_age=30) is not None)
        assert liveness(tmp_path, max_age=30) is None
        assert "waiting for Redis" in (waiting(tmp_path, max_age=30) or "")

        away.up.set()

        assert eventually(lambda: waiting(tmp_path, max_age=30) is None)
    finally:
        worker.stop()


def test_a_process_stopped_while_it_waits_for_redis_stops_trying(
    waiting_broker: StubBroker, away: Redis, tmp_path: Path
) -> None:
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)
    start_and_keep(worker)
    assert eventually(lambda: away.installs >= 2)

    worker.stop()

    attempts = away.installs
    time.sleep(0.2)
    assert away.installs == attempts
    assert list(tmp_path.iterdir()) == []


class Ended(Exception):
    """Stands for the end of the process, which a test cannot have."""


def test_a_refusal_once_redis_answers_ends_the_process_without_a_message_taken(
    waiting_broker: StubBroker, away: Redis, taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[Exception] = []

    def end_process_now(error: Exception) -> None:
        ended.append(error)
        raise Ended

    monkeypatch.setattr(boot, "_end_process_now", end_process_now)
    away.refusal = redis.exceptions.NoPermissionError("this user has no permissions to run 'function|load'")
    worker = Worker(waiting_broker, worker_threads=1, worker_timeout=50)
    start_and_keep(worker)
    try:
        waiting_broker.actors["record"].send("sent while Redis was away")

        away.up.set()

        assert eventually(lambda: bool(ended))
        assert isinstance(ended[0], redis.exceptions.NoPermissionError)
        time.sleep(0.1)
        assert taken == []
    finally:
        worker.stop()


def start_and_keep(worker: Worker) -> SystemExit | None:
    """How Worker.start() ended the process, or None when it did not; the worker keeps running."""
    try:
        worker.start()
    except SystemExit as exited:
        return exited
    return None
