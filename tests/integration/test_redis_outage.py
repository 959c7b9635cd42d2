"""A worker outlives Redis going away: frozen (no answers, connections open) or restarted,
it carries on by itself once Redis is back, with nothing lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.chaos.cluster import ChaosRedis
from flashcall_dev.stack import LocalStack, local_stack
from worker.client import Producer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Longer than redis-py's 5 s socket timeout, so that every connection of the worker times out.
FROZEN_S = 8


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ChaosRedis]:
    server = ChaosRedis(tmp_path / "redis", aof=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def running(own_redis: ChaosRedis) -> Iterator[tuple[LocalStack, Producer]]:
    with local_stack(redis_url=own_redis.url) as stack:
        stack.start_worker(processes=1, threads=8)
        yield stack, Producer.from_url(stack.redis_url)


def sent_within(producer: Producer, verification_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if producer.status(verification_id)["status"] == "sent":
            return True
        time.sleep(0.1)
    return False


def test_after_redis_was_frozen_the_worker_takes_new_verifications(
    running: tuple[LocalStack, Producer], own_redis: ChaosRedis, new_phone: Callable[[], str]
) -> None:
    _, producer = running
    # Frozen while these are being processed: acknowledgements are waiting to be sent.
    caught = [f"in-flight-{n}" for n in range(40)]
    for verification_id in caught:
        producer.start(verification_id, "+" + new_phone())
    time.sleep(0.3)
    own_redis.freeze()
    time.sleep(FROZEN_S)
    own_redis.thaw()

    producer.start("after-freeze", "+" + new_phone())
    assert sent_within(producer, "after-freeze", 15)
    assert all(sent_within(producer, verification_id, 40) for verification_id in caught)


def test_after_redis_restarted_the_worker_takes_new_verifications(
    running: tuple[LocalStack, Producer], own_redis: ChaosRedis, new_phone: Callable[[], str]
) -> None:
    _, producer = running
    producer.start("before-restart", "+" + new_phone())
    assert sent_within(producer, "before-restart", 10)

    own_redis.shutdown()
    time.sleep(2)
    own_redis.start()

    producer.start("after-restart", "+" + new_phone())
    assert sent_within(producer, "after-restart", 15)
    assert producer.status("before-restart")["status"] == "sent"
