"""Rotating FLASHCALL_CODE_SECRET with verifications in flight.

Codes are delivered by a worker running under the old secret; that worker stops, and
each test boots one under the new secret, with or without the old one in
FLASHCALL_CODE_SECRET_PREVIOUS, the way an operator rolls the change out. The stack
(redis-server and sandbox) is this module's own, so that no other worker, under another
secret, takes these checks.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flashcall_dev.stack import LocalStack, ManagedProcess, local_stack
from tests.conftest import TEST_ROUTING
from tests.support import Sandbox
from worker.client import Producer

pytestmark = pytest.mark.integration

NEW_SECRET = secrets.token_hex(32)


@dataclass(frozen=True)
class Delivered:
    verification_id: str
    code: str


@pytest.fixture(scope="module")
def rotation_stack() -> Iterator[LocalStack]:
    with local_stack(routing_path=TEST_ROUTING) as started:
        yield started


@pytest.fixture(scope="module")
def rotation_producer(rotation_stack: LocalStack) -> Iterator[Producer]:
    client = Producer.from_url(rotation_stack.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def delivered_before_rotation(rotation_stack: LocalStack, rotation_producer: Producer) -> list[Delivered]:
    """Three verifications whose code reached the phone while the old secret was in force
    (the stack's own), each waiting for the user; the old worker is gone afterwards."""
    old_worker = rotation_stack.start_worker(name="worker-old-secret")
    sandbox = Sandbox(rotation_stack.sandbox_url)
    delivered: list[Delivered] = []
    try:
        for _ in range(3):
            verification_id = f"rotation-{secrets.token_hex(6)}"
            phone = f"7999{secrets.randbelow(10_000_000):07d}"
            # One channel: once its step times out the verification waits for the code
            # already delivered, and no call under the new secret adds another.
            rotation_producer.start(verification_id, "+" + phone, channels=["flashcall"])
            assert (
                rotation_producer.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
            )
            delivered.append(Delivered(verification_id, sandbox.inbox(phone)[-1]["code"]))
    finally:
        sandbox.close()
        old_worker.stop()
    return delivered


def start_worker(stack: LocalStack, name: str, *, previous: str) -> ManagedProcess:
    env = {"FLASHCALL_CODE_SECRET": NEW_SECRET, "FLASHCALL_CODE_SECRET_PREVIOUS": previous}
    return stack.start_worker(name=name, env=env)


@pytest.fixture
def rotated_worker(rotation_stack: LocalStack) -> Iterator[ManagedProcess]:
    """Restarted with the new secret and the old one as previous."""
    worker = start_worker(rotation_stack, "worker-rotated", previous=rotation_stack.code_secret)
    yield worker
    worker.stop()


@pytest.fixture
def worker_without_old_secret(rotation_stack: LocalStack) -> Iterator[ManagedProcess]:
    """The rotation finished: the old secret dropped from the previous list."""
    worker = start_worker(rotation_stack, "worker-rotation-done", previous="")
    yield worker
    worker.stop()


@pytest.mark.usefixtures("rotated_worker")
def test_a_code_delivered_under_the_old_secret_is_approved_after_the_rotation(
    rotation_producer: Producer, delivered_before_rotation: list[Delivered]
) -> None:
    first = delivered_before_rotation[0]
    answer = rotation_producer.check(first.verification_id, first.code)
    assert (answer["result"], answer["status"]) == ("approved", "approved")


@pytest.mark.usefixtures("rotated_worker")
def test_a_wrong_code_is_still_rejected_after_the_rotation(
    rotation_producer: Producer, delivered_before_rotation: list[Delivered]
) -> None:
    second = delivered_before_rotation[1]
    wrong = "0000" if second.code != "0000" else "1111"
    answer = rotation_producer.check(second.verification_id, wrong)
    assert (answer["result"], answer["status"], answer["attempts_left"]) == ("rejected", "sent", 2)


@pytest.mark.usefixtures("worker_without_old_secret")
def test_a_code_hashed_under_a_secret_dropped_from_the_previous_list_is_rejected(
    rotation_producer: Producer, delivered_before_rotation: list[Delivered]
) -> None:
    third = delivered_before_rotation[2]
    answer = rotation_producer.check(third.verification_id, third.code)
    assert (answer["result"], answer["status"]) == ("rejected", "sent")
