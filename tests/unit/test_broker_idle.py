"""What an idle consumer of worker/redis/broker.py sends Redis: a wait on its wake list,
then the queue's length, and a fetch only when something says the queue holds messages
(a wake token, a queue that is not empty, a maintenance pass). Against a stand-in for the
broker that records each command; no Redis is involved."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import advance_message
from worker.core import keys
from worker.redis.broker import _Consumer

QUEUE = keys.VERIFY_QUEUE


class Client:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.tokens = 0
        self.queued = 0

    def blpop(self, wake_keys: list[str], timeout: float) -> tuple[str, str] | None:
        self.sent.append(("blpop", *wake_keys, timeout))
        if self.tokens:
            self.tokens -= 1
            return (wake_keys[0], "1")
        return None

    def llen(self, key: str) -> int:
        self.sent.append(("llen", key))
        return self.queued


class Broker:
    def __init__(self) -> None:
        self.client = Client()
        self.messages: list[tuple[str, bytes | None]] = []
        self.acknowledged: list[str] = []

    def fetch(
        self, queue_name: str, count: int, *, acks: Sequence[str] = ()
    ) -> list[tuple[str, bytes | None]]:
        self.client.sent.append(("fetch", queue_name))
        self.acknowledged.extend(acks)
        taken, self.messages = self.messages[:count], self.messages[count:]
        return taken

    def maintain(self, queue_name: str) -> None:
        self.client.sent.append(("maintain", queue_name))


@dataclass
class Rig:
    consumer: _Consumer
    client: Client
    broker: Broker


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    broker = Broker()
    consumer = _Consumer(broker, QUEUE, prefetch=8, timeout=1000)  # type: ignore[arg-type]
    next(consumer)  # its first round: maintenance, a fetch, a wait
    broker.client.sent.clear()
    # No maintenance pass due in the rounds the tests watch.
    monkeypatch.setattr(consumer, "_next_maintenance", float("inf"))
    return Rig(consumer, broker.client, broker)


def test_an_idle_consumer_waits_a_second_for_a_token_then_reads_only_the_queue_length(rig: Rig) -> None:
    assert next(rig.consumer) is None
    assert next(rig.consumer) is None

    wait = ("blpop", keys.wake(QUEUE), 1.0)
    assert rig.client.sent == [("llen", keys.queue(QUEUE)), wait, ("llen", keys.queue(QUEUE)), wait]


def test_a_wake_token_makes_the_next_round_fetch(rig: Rig) -> None:
    rig.client.tokens = 1
    next(rig.consumer)
    rig.client.sent.clear()

    next(rig.consumer)

    assert rig.client.sent[0] == ("fetch", QUEUE)


def test_a_queue_filled_without_a_token_is_fetched_after_the_wait(rig: Rig) -> None:
    rig.client.queued = 1

    next(rig.consumer)

    assert rig.client.sent[:2] == [("llen", keys.queue(QUEUE)), ("fetch", QUEUE)]


def test_a_maintenance_pass_is_followed_by_a_fetch(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rig.consumer, "_next_maintenance", 0.0)

    next(rig.consumer)

    assert rig.client.sent[:2] == [("maintain", QUEUE), ("fetch", QUEUE)]


def test_a_consumer_without_room_sleeps_instead_of_taking_tokens(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    rig.consumer.queued_message_ids.update(f"m{n}" for n in range(8))

    next(rig.consumer)

    assert rig.client.sent == []
    assert len(slept) == 1


def message(message_id: str) -> tuple[str, bytes]:
    body = advance_message(QUEUE, message_id)
    return message_id, json.dumps(body).encode()


def test_after_a_fetch_that_emptied_the_queue_the_consumer_waits_instead_of_fetching(rig: Rig) -> None:
    rig.broker.messages = [message("m1")]
    rig.client.tokens = 1
    next(rig.consumer)  # the token
    taken = next(rig.consumer)
    assert taken is not None
    assert taken.message_id == "m1"
    rig.client.sent.clear()

    next(rig.consumer)

    assert rig.client.sent == [("blpop", keys.wake(QUEUE), 1.0)]


def test_acknowledgements_to_send_go_with_a_fetch_instead_of_the_queue_length(rig: Rig) -> None:
    rig.broker.messages = [message("m1")]
    rig.client.tokens = 1
    next(rig.consumer)  # the token
    taken = next(rig.consumer)
    assert taken is not None
    rig.consumer.ack(taken)
    next(rig.consumer)  # a wait that ends without a token
    rig.client.sent.clear()

    next(rig.consumer)

    assert rig.client.sent[0] == ("fetch", QUEUE)
    assert rig.broker.acknowledged == ["m1"]
