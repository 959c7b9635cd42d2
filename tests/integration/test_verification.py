"""Verifications end to end: producer functions, a real worker process, the sandbox over HTTP.

The session's worker runs tests/routing.test.yaml: two VoicePassword accounts served by
the sandbox (vp-main, cheaper, and vp-backup), steps flashcall (2 s) -> voice (2 s) -> sms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from flashcall_dev.stack import ManagedProcess
from tests.support import Sandbox
from worker.client import Producer
from worker.core import keys
from worker.redis import functions

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]


def event_names(producer: Producer, verification_id: str) -> list[str]:
    return [event["event"] for event in producer.events(verification_id)]


def delivered_code(sandbox: Sandbox, phone: str) -> str:
    messages = sandbox.inbox(phone)
    assert messages, "nothing reached the phone"
    code: str = messages[-1]["code"]
    return code


def start_and_wait(producer: Producer, verification_id: str, phone: str, **fields: Any) -> dict[str, str]:
    producer.start(verification_id, "+" + phone, **fields)
    return producer.wait_for(verification_id, {"delivered", "failed"})


def test_the_code_the_user_received_approves_the_verification(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    assert start_and_wait(producer, verification_id, phone)["event"] == "delivered"
    answer = producer.check(verification_id, delivered_code(sandbox, phone))
    assert (answer["result"], answer["status"]) == ("approved", "approved")
    assert producer.status(verification_id)["status"] == "approved"


def test_an_approved_verification_has_the_whole_event_trail(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone, metadata={"order": 42})
    producer.check(verification_id, delivered_code(sandbox, phone))
    trail = producer.events(verification_id)
    assert [event["event"] for event in trail] == ["created", "attempt_started", "delivered", "approved"]
    assert all(json.loads(event["metadata"]) == {"order": 42} for event in trail)
    assert trail[2]["provider"] == "vp-main"
    assert trail[2]["channel"] == "flashcall"


def test_the_first_attempt_goes_to_the_cheapest_provider_and_is_paid_for(
    producer: Producer, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    status = producer.status(verification_id)
    assert (status["provider"], status["channel"], status["cost"], status["status"]) == (
        "vp-main",
        "flashcall",
        "0.35",
        "sent",
    )


def test_a_wrong_code_is_rejected_with_the_attempts_left(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    wrong = "0000" if delivered_code(sandbox, phone) != "0000" else "1111"
    answer = producer.check(verification_id, wrong)
    assert (answer["result"], answer["attempts_left"], answer["status"]) == ("rejected", 2, "sent")


def test_three_wrong_codes_end_the_verification_as_max_attempts(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    right = delivered_code(sandbox, phone)
    wrong = "0000" if right != "0000" else "1111"
    results = [producer.check(verification_id, wrong)["result"] for _ in range(3)]
    assert results == ["rejected", "rejected", "max_attempts"]
    assert producer.check(verification_id, right)["result"] == "max_attempts"
    assert producer.status(verification_id)["status"] == "max_attempts"


def test_starting_the_same_id_many_times_at_once_places_one_call(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: producer.start(verification_id, "+" + phone), range(20)))
    assert sum(answer["created"] for answer in answers) == 1
    producer.wait_for(verification_id, {"delivered"})
    assert len(sandbox.calls(phone)) == 1


def test_a_redelivered_start_message_calls_nobody_again(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    message_id = f"redelivered-{verification_id}"
    redelivered = {
        "queue_name": keys.VERIFY_QUEUE,
        "actor_name": "advance",
        "args": [verification_id, 0, "start"],
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": 0,
    }
    enqueue(producer, redelivered)
    wait_until_processed(producer, keys.VERIFY_QUEUE, message_id)
    assert len(sandbox.calls(phone)) == 1


def test_cancel_stops_a_verification_before_its_next_step(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    assert producer.cancel(verification_id)["status"] == "canceled"
    assert producer.check(verification_id, delivered_code(sandbox, phone))["result"] == "canceled"
    with pytest.raises(TimeoutError):
        producer.wait_for(verification_id, {"fallback"}, timeout=3)
    assert len(sandbox.calls(phone)) == 1


def test_cancel_during_a_call_keeps_its_cost_and_takes_no_next_step(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"latency_ms": 700})
    producer.start(verification_id, "+" + phone)
    producer.wait_for(verification_id, {"attempt_started"})
    producer.cancel(verification_id)
    producer.wait_for(verification_id, {"delivered"})
    status = producer.status(verification_id)
    assert (status["status"], status["cost"]) == ("canceled", "0.35")


def test_a_provider_error_falls_back_to_the_next_provider_for_the_same_channel(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"http_status": 503})
    assert start_and_wait(producer, verification_id, phone)["provider"] == "vp-backup"
    fallback = producer.wait_for(verification_id, {"fallback"})
    assert (fallback["from_provider"], fallback["provider"], fallback["reason"], fallback["channel"]) == (
        "vp-main",
        "vp-backup",
        "provider_error",
        "flashcall",
    )


def test_a_provider_that_does_not_answer_in_time_is_a_timeout_and_falls_back(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"hang": True})
    assert start_and_wait(producer, verification_id, phone)["provider"] == "vp-backup"
    failed = producer.wait_for(verification_id, {"attempt_failed"})
    assert (failed["reason"], failed["error_code"]) == ("timeout", "timeout")


def test_when_every_provider_refuses_the_number_the_next_step_is_tried(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"error_code": "number_in_spam_list"}, {"error_code": "number_in_spam_list"})
    delivered = start_and_wait(producer, verification_id, phone)
    assert (delivered["channel"], delivered["provider"]) == ("voice", "vp-main")
    failures = [e for e in producer.events(verification_id) if e["event"] == "attempt_failed"]
    assert [(e["provider"], e["reason"], e["error_code"]) for e in failures] == [
        ("vp-main", "refused", "number_in_spam_list"),
        ("vp-backup", "refused", "number_in_spam_list"),
    ]


def test_a_bad_number_fails_the_verification_without_another_call(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"error_code": "number_is_empty"})
    failed = start_and_wait(producer, verification_id, phone)
    assert (failed["event"], failed["reason"]) == ("failed", "bad_number")
    assert producer.status(verification_id)["status"] == "failed"
    assert len(sandbox.records(phone)) == 1


def test_a_number_that_is_not_an_assigned_russian_number_is_never_called(
    producer: Producer, sandbox: Sandbox, verification_id: str
) -> None:
    unassigned = "70001234567"
    failed = start_and_wait(producer, verification_id, unassigned)
    assert (failed["event"], failed["reason"]) == ("failed", "bad_number")
    assert sandbox.records(unassigned) == []


def test_an_outcome_the_policy_does_not_fall_back_on_fails_the_verification(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    sandbox.script(phone, {"http_status": 500})
    failed = start_and_wait(producer, verification_id, phone, policy="strict")
    assert (failed["event"], failed["reason"]) == ("failed", "provider_error")
    assert len(sandbox.records(phone)) == 1


def test_an_unanswered_step_moves_on_to_the_next_channel_after_its_timeout(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    fallback = producer.wait_for(verification_id, {"fallback"}, timeout=10)
    assert (fallback["reason"], fallback["from_channel"], fallback["channel"]) == (
        "timeout",
        "flashcall",
        "voice",
    )
    # The voice call is in the inbox once it is delivered (the first attempt_started is the flash call's).
    producer.wait_for(verification_id, {"delivered"}, timeout=10, where=on_channel("voice"))
    assert [m["channel"] for m in sandbox.inbox(phone)][:2] == ["flashcall", "voice"]


def test_the_last_step_resends_the_code_by_sms_through_the_provider_that_called(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    producer.start(verification_id, "+" + phone)
    sms_delivered = producer.wait_for(verification_id, {"delivered"}, timeout=15, where=on_channel("sms"))
    assert sms_delivered["provider"] == "vp-main"
    voice, sms = [m for m in sandbox.inbox(phone) if m["channel"] in {"voice", "sms"}]
    assert sms["code"] == voice["code"]
    assert producer.check(verification_id, sms["code"])["result"] == "approved"


def test_a_code_from_an_earlier_step_still_approves(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone)
    flash_code = delivered_code(sandbox, phone)
    producer.wait_for(verification_id, {"attempt_started"}, timeout=10, where=on_channel("voice"))
    assert producer.check(verification_id, flash_code)["result"] == "approved"


def test_a_verification_with_a_six_digit_code_gets_the_code_the_provider_made(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone, code_length=6)
    code = delivered_code(sandbox, phone)
    assert len(code) == 6
    assert producer.check(verification_id, code)["result"] == "approved"


def test_the_requested_channels_decide_the_steps(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    delivered = start_and_wait(producer, verification_id, phone, channels=["voice"])
    assert delivered["channel"] == "voice"
    assert producer.check(verification_id, delivered_code(sandbox, phone))["result"] == "approved"


def test_a_start_request_enqueued_as_a_message_is_verified_like_a_function_call(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    enqueue(
        producer,
        {
            "queue_name": keys.VERIFY_QUEUE,
            "actor_name": "start",
            "args": [{"id": verification_id, "phone": "8" + phone[1:]}],
            "kwargs": {},
            "options": {"redis_message_id": f"direct-{verification_id}"},
            "message_id": f"direct-{verification_id}",
            "message_timestamp": 0,
        },
    )
    producer.wait_for(verification_id, {"delivered"})
    assert producer.check(verification_id, delivered_code(sandbox, phone))["result"] == "approved"


def test_the_worker_log_never_shows_a_full_phone_number_or_a_code(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str, worker: ManagedProcess
) -> None:
    start_and_wait(producer, verification_id, phone)
    code = delivered_code(sandbox, phone)
    producer.check(verification_id, "0000" if code != "0000" else "1111")
    producer.check(verification_id, code)
    log = worker.log_path.read_text()
    assert verification_id in log
    assert phone not in log
    assert f"'{code}'" not in log
    assert f'"{code}"' not in log


def enqueue(producer: Producer, message: dict[str, Any], queue: str = keys.VERIFY_QUEUE) -> None:
    client = producer.client
    message_id = message["options"]["redis_message_id"]
    client.hset(keys.queue_messages(queue), message_id, json.dumps(message))
    client.rpush(keys.queue(queue), message_id)
    client.rpush(keys.wake(queue), "1")


def wait_until_processed(producer: Producer, queue: str, message_id: str, timeout: float = 10.0) -> None:
    """A message is processed once it is acknowledged: its body leaves the queue's hash."""
    deadline = time.monotonic() + timeout
    while producer.client.hexists(keys.queue_messages(queue), message_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"message {message_id} still unprocessed after {timeout} s")
        time.sleep(0.02)


def on_channel(channel: str) -> Callable[[dict[str, str]], bool]:
    return lambda event: event.get("channel") == channel


def test_a_running_worker_reinstalls_the_library_when_redis_lost_it(producer: Producer) -> None:
    producer.client.function_flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert functions.version().run(producer.client)
            return
        except redis.ResponseError:
            time.sleep(0.05)
    pytest.fail("the library was not reinstalled within 10 s")


def test_a_code_that_telphin_keeps_is_checked_through_telphin(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    delivered = start_and_wait(producer, verification_id, phone, policy="telphin_first")
    assert delivered["provider"] == "tel"
    answer = producer.check(verification_id, delivered_code(sandbox, phone))
    assert answer["result"] == "approved"
    assert [r["path"] for r in sandbox.records(phone, provider="telphin")] == ["/", "/auth/"]


def test_a_wrong_code_for_a_telphin_call_is_rejected_by_telphin(
    producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone, policy="telphin_first")
    wrong = "0000" if delivered_code(sandbox, phone) != "0000" else "1111"
    assert producer.check(verification_id, wrong)["result"] == "rejected"
    assert [r["error_code"] for r in sandbox.records(phone, provider="telphin")] == [None, "invalid_code"]


def test_a_provider_charges_the_configured_cost_when_it_reports_no_price(
    producer: Producer, verification_id: str, phone: str
) -> None:
    start_and_wait(producer, verification_id, phone, policy="telphin_first")
    assert producer.status(verification_id)["cost"] == "0.30"
