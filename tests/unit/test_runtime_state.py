"""When a worker process reads the routing state (worker/process/runtime.py): every state
interval while it routes, every IDLE_STATE_INTERVAL while it does not, and first thing when
it routes again after a quiet spell. Unit tests: the read is a stand-in that counts, the
monotonic clock one the test moves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.core.errors import StoreUnavailable
from worker.process import runtime as runtime_module
from worker.process.metrics import Metrics
from worker.process.runtime import IDLE_STATE_INTERVAL, Runtime
from worker.process.settings import Settings
from worker.redis.store import Store
from worker.routing.state import RoutingState

INTERVAL = 1.0


class Reads:
    """Stands in for refresh_state: counts the reads, each taking `takes` seconds."""

    def __init__(self) -> None:
        self.count = 0
        self.takes = 0.0
        self.failure: Exception | None = None

    async def __call__(self, store: Any, config: Any, *, now_ms: int) -> RoutingState:
        self.count += 1
        await asyncio.sleep(self.takes)
        if self.failure is not None:
            raise self.failure
        return RoutingState()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    counted = Reads()
    monkeypatch.setattr(runtime_module, "refresh_state", counted)
    return counted


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(clock: Clock) -> Runtime:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", code_secret=b"s" * 16, routing_path=Path("routing.yaml")
    )
    holder = SimpleNamespace(current=SimpleNamespace(config=SimpleNamespace(providers={}, learning=None)))
    return Runtime(
        settings=settings,
        store=SimpleNamespace(),  # type: ignore[arg-type]
        holder=holder,  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
        client=SimpleNamespace(),  # type: ignore[arg-type]
        monotonic=clock,
    )


def test_the_first_routing_decision_reads_the_state_and_the_next_ones_use_it(
    runtime: Runtime, reads: Reads, clock: Clock
) -> None:
    async def decisions() -> None:
        await runtime.fresh_state()
        clock.now += INTERVAL
        await runtime.fresh_state()

    asyncio.run(decisions())

    assert reads.count == 1


def test_a_decision_after_a_quiet_spell_reads_the_state_first(
    runtime: Runtime, reads: Reads, clock: Clock
) -> None:
    async def decisions() -> None:
        await runtime.fresh_state()
        clock.now += 2 * INTERVAL + 0.1
        await runtime.fresh_state()

    asyncio.run(decisions())

    assert reads.count == 2


def test_decisions_that_come_during_a_read_wait_for_it(runtime: Runtime, reads: Reads, clock: Clock) -> None:
    reads.takes = 0.05

    async def decisions() -> None:
        await asyncio.gather(*(runtime.fresh_state() for _ in range(5)))

    asyncio.run(decisions())

    assert reads.count == 1


def test_a_decision_goes_on_with_the_last_state_when_redis_is_away(
    runtime: Runtime, reads: Reads, clock: Clock
) -> None:
    reads.failure = StoreUnavailable("Redis is unreachable")

    asyncio.run(runtime.fresh_state())

    assert reads.count == 1
    assert runtime.state == RoutingState()


def test_while_it_routes_the_state_is_read_every_interval(
    runtime: Runtime, reads: Reads, clock: Clock
) -> None:
    async def ticks() -> None:
        await runtime.fresh_state()
        for _ in range(3):
            clock.now += INTERVAL
            await runtime.fresh_state()
            await runtime._keep_state()

    asyncio.run(ticks())

    assert reads.count == 4


def test_while_it_does_not_route_the_state_is_read_only_every_idle_interval(
    runtime: Runtime, reads: Reads, clock: Clock
) -> None:
    async def ticks() -> None:
        await runtime.fresh_state()
        for _ in range(int(2 * IDLE_STATE_INTERVAL / INTERVAL)):
            clock.now += INTERVAL
            await runtime._keep_state()

    asyncio.run(ticks())

    assert reads.count == 3


class Closable:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def test_a_start_that_redis_leaves_half_way_closes_what_it_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    provider = Closable()
    provider.prepare = lambda: None  # type: ignore[attr-defined]
    store = Closable()

    async def mode() -> None:
        raise StoreUnavailable("Redis is unreachable (Connection refused); the message will be retried")

    store.replicas = SimpleNamespace(mode=mode)  # type: ignore[attr-defined]
    routing = SimpleNamespace(providers={"vp": provider}, config=SimpleNamespace(providers={}, learning=None))
    monkeypatch.setattr(runtime_module, "sync_client", lambda *args, **kwargs: SimpleNamespace())
    monkeypatch.setattr(runtime_module, "RoutingHolder", lambda *args: SimpleNamespace(current=routing))
    monkeypatch.setattr(Store, "connect", lambda *args, **kwargs: store)
    monkeypatch.setattr(runtime_module, "Metrics", lambda: Metrics(CollectorRegistry()))
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", code_secret=b"s" * 16, routing_path=tmp_path / "r.yaml"
    )

    with pytest.raises(StoreUnavailable):
        asyncio.run(Runtime.start(settings, environ={}))

    assert provider.closed
    assert store.closed
