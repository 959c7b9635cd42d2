"""Idle consumers (worker/redis/broker.py) wake on tokens and still take what comes without one.

Every message Dramatiq enqueues through the broker (a retry into the delay queue, a
delayed message coming due) pushes a wake token, as the library's functions do; a message
a producer queues directly without one is taken within about a second (docs/protocol.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from dramatiq import Message

from worker.client import Producer
from worker.core import keys
from worker.redis.broker import FlashcallBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(library: redis.Redis) -> Iterator[FlashcallBroker]:
    made = FlashcallBroker(client=library, middleware=[])
    yield made
    made.close()


def message() -> Message[None]:
    return Message(
        queue_name=keys.VERIFY_QUEUE, actor_name="advance", args=("v1", 0, "start"), kwargs={}, options={}
    )


def test_a_message_dramatiq_enqueues_wakes_the_queues_consumers(
    broker: FlashcallBroker, library: redis.Redis
) -> None:
    broker.enqueue(message())

    assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 1


def test_a_delayed_message_wakes_the_delay_queues_consumers(
    broker: FlashcallBroker, library: redis.Redis
) -> None:
    broker.enqueue(message(), delay=60_000)

    assert library.llen(keys.wake(keys.VERIFY_QUEUE + ".DQ")) == 1
    assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 0


def test_wake_tokens_stay_as_few_as_the_librarys(broker: FlashcallBroker, library: redis.Redis) -> None:
    for _ in range(40):
        broker.enqueue(message())

    assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 16


@pytest.mark.usefixtures("worker")
def test_an_idle_worker_takes_a_message_queued_without_a_token_within_about_a_second(
    producer: Producer, verification_id: str, phone: str
) -> None:
    time.sleep(2)  # every consumer idle, waiting on its wake list
    message_id = f"direct-{verification_id}"
    body = {
        "queue_name": keys.VERIFY_QUEUE,
        "actor_name": "start",
        "args": [{"id": verification_id, "phone": "+" + phone}],
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    producer.client.hset(keys.queue_messages(keys.VERIFY_QUEUE), message_id, json.dumps(body))
    producer.client.rpush(keys.queue(keys.VERIFY_QUEUE), message_id)
    queued = time.monotonic()

    while producer.client.hexists(keys.queue_messages(keys.VERIFY_QUEUE), message_id):
        assert time.monotonic() - queued < 5, "not taken"
        time.sleep(0.02)
    assert producer.status(verification_id)["status"] != "not_found"
