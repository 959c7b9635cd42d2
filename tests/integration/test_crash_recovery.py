"""A worker killed during a provider call: the call may have reached the user, so nobody
calls them again before the step's timeout; then the next step goes on.

Real processes: the worker is SIGKILLed while the sandbox holds its call open, and a new
worker takes over, as a supervisor would restart it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from flashcall_dev.stack import LocalStack
from tests.support import OwnStack, Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The lease of a call is the provider's timeout plus 10 s; the step waits 20 s from the claim.
ROUTING = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 1s
    channels: {flashcall: {cost: 0.35}, voice: {cost: 0.35}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 20s}
      - {channel: voice}
limits:
  per_phone: [{limit: 100, per: 1m}]
"""
LEASE_S = 11
STEP_S = 20


@pytest.fixture(scope="module")
def crashed(own_stack: OwnStack) -> Iterator[tuple[LocalStack, str, str, float]]:
    """A verification whose worker died mid-call, a new worker running: (stack, id, phone, claimed at)."""
    with own_stack(ROUTING) as stack:
        sandbox = Sandbox(stack.sandbox_url)
        producer = Producer.from_url(stack.redis_url)
        phone = "79990004242"
        sandbox.script(phone, {"hang": True})
        first = stack.start_worker(processes=1, threads=8, check_processes=0)
        producer.start("crashed-1", "+" + phone)
        deadline = time.monotonic() + 10
        while not sandbox.records(phone):
            assert time.monotonic() < deadline, "the call never reached the sandbox"
            time.sleep(0.02)
        claimed = time.monotonic()
        first.kill()
        stack.processes.remove(first)
        stack.start_worker(processes=1, threads=8, check_processes=0, name="restarted")
        yield stack, "crashed-1", phone, claimed
        sandbox.close()


def state(stack: LocalStack, verification_id: str) -> str | None:
    producer = Producer.from_url(stack.redis_url)
    found = producer.client.hget(keys.verification(verification_id), "attempt_state")
    return None if found is None else str(found)


def wait_until(seconds_after_claim: float, claimed: float) -> None:
    time.sleep(max(0.0, claimed + seconds_after_claim - time.monotonic()))


def test_after_the_lease_the_attempt_is_unknown_and_nobody_is_called_again(
    crashed: tuple[LocalStack, str, str, float],
) -> None:
    stack, verification_id, phone, claimed = crashed
    wait_until(LEASE_S + 3, claimed)
    assert state(stack, verification_id) == "unknown"
    assert len(Sandbox(stack.sandbox_url).records(phone)) == 1


def test_a_timeout_delivered_twice_does_not_cut_the_wait_short(
    crashed: tuple[LocalStack, str, str, float],
) -> None:
    stack, verification_id, phone, claimed = crashed
    wait_until(LEASE_S + 3, claimed)
    client = Producer.from_url(stack.redis_url).client
    attempt = int(client.hget(keys.verification(verification_id), "attempt") or 0)
    # What Dramatiq redelivers when the worker that took the lease's timeout died before
    # acknowledging it: the same advance, again.
    body = {
        "queue_name": keys.VERIFY_QUEUE,
        "actor_name": "advance",
        "args": [verification_id, attempt, "timeout"],
        "kwargs": {},
        "options": {"redis_message_id": "again-1"},
        "message_id": "again-1",
        "message_timestamp": 0,
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.queue_messages(keys.VERIFY_QUEUE), "again-1", json.dumps(body))
        pipe.rpush(keys.queue(keys.VERIFY_QUEUE), "again-1")
        pipe.rpush(keys.wake(keys.VERIFY_QUEUE), "1")
        pipe.execute()
    deadline = time.monotonic() + 5
    while client.hexists(keys.queue_messages(keys.VERIFY_QUEUE), "again-1"):
        assert time.monotonic() < deadline, "the advance was never processed"
        time.sleep(0.05)
    assert state(stack, verification_id) == "unknown"
    assert len(Sandbox(stack.sandbox_url).records(phone)) == 1


def test_at_the_step_timeout_the_next_step_calls(crashed: tuple[LocalStack, str, str, float]) -> None:
    stack, verification_id, phone, claimed = crashed
    wait_until(STEP_S + 4, claimed)
    calls = Sandbox(stack.sandbox_url).records(phone)
    assert [call["kind"] for call in calls] == ["flashcall", "voice"]
    assert Producer.from_url(stack.redis_url).status(verification_id)["attempts"] == 2
