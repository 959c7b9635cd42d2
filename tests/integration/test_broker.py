"""The broker's fetch and acknowledgements, and what its consumer sends to Redis between
messages (worker/redis/broker.py), against a redis-server of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from tests.support import advance_message
from worker.core import keys
from worker.redis import broker as broker_module
from worker.redis.broker import FlashcallBroker

pytestmark = pytest.mark.integration

QUEUE = keys.VERIFY_QUEUE


@pytest.fixture
def client(library: redis.Redis, library_url: str) -> Iterator[redis.Redis]:
    """The broker's own kind of client (bytes), on the emptied Redis of `library`."""
    raw = redis.Redis.from_url(library_url)
    yield raw
    raw.close()


@pytest.fixture
def broker(client: redis.Redis) -> FlashcallBroker:
    return FlashcallBroker(client=client, middleware=[])


def enqueue(client: redis.Redis, *message_ids: str) -> None:
    """Messages as the library queues them: body, id on the list, a wake token each."""
    for message_id in message_ids:
        body = advance_message(QUEUE, message_id)
        client.hset(keys.queue_messages(QUEUE), message_id, json.dumps(body))
        client.rpush(keys.queue(QUEUE), message_id)
        client.rpush(keys.wake(QUEUE), "1")


def unacknowledged(client: redis.Redis, broker: FlashcallBroker) -> set[str]:
    members = cast(set[bytes], client.smembers(keys.consumer_acks(broker.broker_id, QUEUE)))
    return {member.decode() for member in members}


def bodies(client: redis.Redis) -> set[str]:
    return {name.decode() for name in cast(list[bytes], client.hkeys(keys.queue_messages(QUEUE)))}


def calls(client: redis.Redis) -> dict[str, int]:
    """Commands run so far, by name (those run inside scripts included)."""
    stats = cast(dict[str, dict[str, Any]], client.info("commandstats"))
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


def since(before: dict[str, int], client: redis.Redis) -> dict[str, int]:
    """Commands run after `before`, the INFO that took `before` left out."""
    now = calls(client)
    ran = {name: count - before.get(name, 0) for name, count in now.items() if count != before.get(name, 0)}
    ran.pop("info", None)
    return ran


class TestFetch:
    def test_a_fetch_takes_up_to_its_count_in_order_with_the_bodies(
        self, client: redis.Redis, broker: FlashcallBroker
    ) -> None:
        enqueue(client, "m1", "m2", "m3")

        fetched = broker.fetch(QUEUE, 2)

        assert [message_id for message_id, _ in fetched] == ["m1", "m2"]
        assert [json.loads(cast(bytes, body))["message_id"] for _, body in fetched] == ["m1", "m2"]
        assert unacknowledged(client, broker) == {"m1", "m2"}
        assert client.lrange(keys.queue(QUEUE), 0, -1) == [b"m3"]

    def test_an_id_without_a_body_comes_with_none(self, client: redis.Redis, broker: FlashcallBroker) -> None:
        client.rpush(keys.queue(QUEUE), "lonely")

        assert broker.fetch(QUEUE, 4) == [("lonely", None)]

    def test_an_empty_queue_gives_nothing(self, broker: FlashcallBroker) -> None:
        assert broker.fetch(QUEUE, 4) == []

    def test_a_fetch_acknowledges_the_messages_it_carries(
        self, client: redis.Redis, broker: FlashcallBroker
    ) -> None:
        enqueue(client, "m1", "m2", "m3")
        broker.fetch(QUEUE, 2)

        fetched = broker.fetch(QUEUE, 2, acks=["m1", "m2"])

        assert [message_id for message_id, _ in fetched] == ["m3"]
        assert unacknowledged(client, broker) == {"m3"}
        assert bodies(client) == {"m3"}

    def test_a_fetch_writes_no_heartbeat(self, client: redis.Redis, broker: FlashcallBroker) -> None:
        broker.fetch(QUEUE, 1)  # loads the script
        enqueue(client, "m1")
        before = calls(client)

        broker.fetch(QUEUE, 1)

        assert since(before, client) == {"evalsha": 1, "lpop": 1, "sadd": 1, "hmget": 1}
        assert client.zscore(keys.heartbeats(), broker.broker_id) is None


class TestAcknowledgements:
    @pytest.mark.parametrize("others", [0, 2])
    def test_a_message_given_back_to_the_queue_meanwhile_keeps_its_body(
        self, client: redis.Redis, broker: FlashcallBroker, others: int
    ) -> None:
        done = [f"done-{n}" for n in range(others)]
        enqueue(client, "returned", *done)
        broker.fetch(QUEUE, 1 + others)
        # As Dramatiq's maintenance does for a worker it took for dead.
        client.srem(keys.consumer_acks(broker.broker_id, QUEUE), "returned")
        client.rpush(keys.queue(QUEUE), "returned")

        broker.ack_many(QUEUE, ["returned", *done])

        assert bodies(client) == {"returned"}
        assert unacknowledged(client, broker) == set()

    def test_many_are_acknowledged_with_three_commands(
        self, client: redis.Redis, broker: FlashcallBroker
    ) -> None:
        ids = [f"m{n}" for n in range(10)]
        enqueue(client, *ids)
        broker.fetch(QUEUE, 10)
        before = calls(client)

        broker.ack_many(QUEUE, ids)

        assert since(before, client) == {"evalsha": 1, "smismember": 1, "srem": 1, "hdel": 1}
        assert bodies(client) == set()


class TestConsumer:
    """One consumer, driven by hand as Dramatiq's consumer thread drives it (with an idle
    timeout of 100 ms). Its first call runs its maintenance."""

    @pytest.fixture
    def consumer(self, broker: FlashcallBroker) -> Any:
        return broker.consume(QUEUE, prefetch=4, timeout=100)

    def test_its_maintenance_writes_the_heartbeat(
        self, client: redis.Redis, broker: FlashcallBroker, consumer: Any
    ) -> None:
        next(consumer)

        assert client.zscore(keys.heartbeats(), broker.broker_id) is not None

    def test_after_a_fetch_that_emptied_the_queue_the_consumer_waits_on_the_wake_list(
        self, client: redis.Redis, consumer: Any
    ) -> None:
        enqueue(client, "m1")
        client.delete(keys.wake(QUEUE))
        assert next(consumer).message_id == "m1"
        before = calls(client)

        assert next(consumer) is None

        assert since(before, client) == {"blpop": 1}

    def test_a_token_makes_the_waiting_consumer_fetch(self, client: redis.Redis, consumer: Any) -> None:
        enqueue(client, "m1")
        client.delete(keys.wake(QUEUE))
        next(consumer)
        enqueue(client, "m2")

        assert next(consumer) is None
        assert next(consumer).message_id == "m2"

    def test_acknowledgements_travel_with_the_next_fetch(
        self, client: redis.Redis, consumer: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(broker_module, "ACK_DELAY", 60.0)
        enqueue(client, "m1")
        consumer.ack(next(consumer))
        assert next(consumer) is None
        before = calls(client)

        assert next(consumer) is None

        assert since(before, client)["evalsha"] == 1
        assert bodies(client) == set()

    def test_a_closing_consumer_sends_its_acknowledgements(self, client: redis.Redis, consumer: Any) -> None:
        enqueue(client, "m1")
        consumer.ack(next(consumer))

        consumer.close()

        assert bodies(client) == set()
