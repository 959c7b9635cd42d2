"""Poison messages: whatever lands in a queue, the valid messages around it are processed.

Each test pushes its messages in one batch, so the worker prefetches the junk together
with valid work: Dramatiq's stock consumer would restart on the undecodable one and
strand the rest until the process died.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from flashcall_dev.stack import ManagedProcess
from worker.client import Producer
from worker.core import keys

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

QUEUE = keys.VERIFY_QUEUE


def message(message_id: str, actor: str, arguments: list[Any], **overrides: Any) -> str:
    body: dict[str, Any] = {
        "queue_name": QUEUE,
        "actor_name": actor,
        "args": arguments,
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": 0,
    }
    body.update(overrides)
    return json.dumps(body)


def push_batch(producer: Producer, bodies: list[tuple[str, str | bytes | None]]) -> None:
    """Queue messages in one step; a None body queues the id alone."""
    client = producer.client
    with client.pipeline(transaction=True) as pipe:
        for message_id, body in bodies:
            if body is not None:
                pipe.hset(keys.queue_messages(QUEUE), message_id, body)
        pipe.rpush(keys.queue(QUEUE), *[message_id for message_id, _ in bodies])
        pipe.rpush(keys.wake(QUEUE), "1")
        pipe.execute()


def dead_lettered(producer: Producer, message_id: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if producer.client.zscore(keys.dead_letters(QUEUE), message_id) is not None:
            return True
        time.sleep(0.02)
    return False


def unacked(producer: Producer, message_ids: set[str]) -> set[str]:
    client = producer.client
    held: set[str] = set()
    for ack_set in client.scan_iter(match=f"{keys.BROKER_NAMESPACE}:__acks__.*"):
        held |= cast(set[str], client.smembers(ack_set)) & message_ids
    return held


POISON: list[tuple[str, str | bytes | None]] = [
    ("not-json", "{{{ not json"),
    ("not-utf8", b"\xff\xfe\x00junk"),
    ("json-array", "[1, 2, 3]"),
    ("missing-fields", json.dumps({"actor_name": "advance", "args": []})),
    ("unknown-field", message("unknown-field", "advance", ["x", 0, "start"], surprise=1)),
    ("wrong-args-type", message("wrong-args-type", "advance", ["x", 0, "start"], args="x")),
    ("bool-timestamp", message("bool-timestamp", "advance", ["x", 0, "start"], message_timestamp=True)),
    ("no-redis-id", message("no-redis-id", "advance", ["x", 0, "start"], options={})),
    ("other-queue", message("other-queue", "advance", ["x", 0, "start"], queue_name="checks")),
    (
        "id-mismatch",
        message("id-mismatch", "advance", ["x", 0, "start"], options={"redis_message_id": "other"}),
    ),
    (
        "bad-eta",
        message("bad-eta", "advance", ["x", 0, "start"], options={"redis_message_id": "bad-eta", "eta": "x"}),
    ),
    ("unknown-actor", message("unknown-actor", "send_pizza", [])),
    ("wrong-argument-types", message("wrong-argument-types", "advance", [42, "zero", None])),
    ("too-few-arguments", message("too-few-arguments", "advance", ["x"])),
    ("start-not-an-object", message("start-not-an-object", "start", ["+79991234567"])),
    ("start-refused", message("start-refused", "start", [{"id": "bad id", "phone": "+79991234567"}])),
    ("no-body", None),
]


@pytest.fixture
def batch(producer: Producer, new_phone: Callable[[], str]) -> list[str]:
    """Ten valid start messages interleaved with every kind of poison, pushed at once."""
    suffix = f"{time.time_ns()}"
    valid = [f"poison-neighbour-{suffix}-{n}" for n in range(10)]
    numbers = [new_phone() for _ in range(10)]
    bodies: list[tuple[str, str | bytes | None]] = []
    for n, verification_id in enumerate(valid):
        message_id = f"valid-{verification_id}"
        bodies.append(
            (message_id, message(message_id, "start", [{"id": verification_id, "phone": numbers[n]}]))
        )
        bodies.extend(
            (
                f"{poison_id}-{suffix}",
                body.replace(poison_id, f"{poison_id}-{suffix}") if isinstance(body, str) else body,
            )
            for poison_id, body in POISON[n::10]
        )
    push_batch(producer, bodies)
    return valid


def test_valid_messages_around_poison_are_all_processed(producer: Producer, batch: list[str]) -> None:
    for verification_id in batch:
        assert producer.wait_for(verification_id, {"delivered"}, timeout=15)


@pytest.mark.parametrize(("poison_id", "body"), POISON, ids=[p[0] for p in POISON])
def test_each_kind_of_poison_ends_in_the_dead_letter_queue(
    producer: Producer, poison_id: str, body: str | bytes | None
) -> None:
    message_id = f"{poison_id}-{time.time_ns()}"
    if isinstance(body, str) and poison_id in body:
        body = body.replace(poison_id, message_id)
    push_batch(producer, [(message_id, body)])
    assert dead_lettered(producer, message_id)
    assert not producer.client.hexists(keys.queue_messages(QUEUE), message_id)
    assert unacked(producer, {message_id}) == set()


def test_poison_leaves_nothing_stranded_in_the_workers_ack_set(producer: Producer, batch: list[str]) -> None:
    for verification_id in batch:
        producer.wait_for(verification_id, {"delivered"}, timeout=15)
    client = producer.client

    def stranded() -> set[str]:
        ids = set(cast(list[str], client.lrange(keys.queue(QUEUE), 0, -1)))
        ids |= set(cast(list[str], client.hkeys(keys.queue_messages(QUEUE))))
        return unacked(producer, ids)

    # Acknowledgements are batched: give the last ones their moment.
    deadline = time.monotonic() + 5
    while stranded() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stranded() == set()


def test_the_reason_of_each_dead_letter_is_logged(producer: Producer, worker: ManagedProcess) -> None:
    message_id = f"logged-{time.time_ns()}"
    push_batch(producer, [(message_id, message(message_id, "advance", [42, "zero", None]))])
    assert dead_lettered(producer, message_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if message_id in line]
        reasons = [line.get("reason", "") for line in lines if "dead-letter" in line.get("event", "")]
        if reasons:
            assert "argument verification_id must be str" in reasons[0]
            return
        time.sleep(0.05)
    pytest.fail("no log line gives the reason")


def test_undecodable_poison_is_logged_with_its_reason(producer: Producer, worker: ManagedProcess) -> None:
    message_id = f"logged-junk-{time.time_ns()}"
    push_batch(producer, [(message_id, "{{{ not json")])
    assert dead_lettered(producer, message_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if message_id in line]
        if lines:
            assert lines[0]["reason"] == "message is not UTF-8 JSON"
            return
        time.sleep(0.05)
    pytest.fail("no log line gives the reason")
