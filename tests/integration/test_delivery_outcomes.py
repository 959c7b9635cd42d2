"""Delivery outcomes move verifications on: provider callbacks (through the real callback
receiver, posted by the sandbox), status polls, and step timeouts.

Two stacks of their own: one whose worker gives providers a callback URL, one without
(so that it polls). Each runs the routing file below.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from flashcall_dev.stack import LocalStack, ManagedProcess
from tests.support import OwnStack, Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTING = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 2s
    channels: {flashcall: {cost: 0.35}, voice: {cost: 0.35}, sms: {cost: 3.30}}
  vp2:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 2s
    channels: {voice: {cost: 0.50}}
  gw:
    type: gateway
    base_url: https://gateway.invalid/api/message
    credentials: {login: env:GATEWAY_LOGIN, password: env:GATEWAY_PASSWORD}
    timeout: 2s
    channels: {flashcall: {cost: 0.20}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 3s, providers: [vp]}
      - {channel: voice, timeout: 3s}
      - {channel: sms}
  voice_then_sms:
    steps:
      - {channel: voice, timeout: 5s, providers: [vp]}
      - {channel: sms}
  voice:
    steps:
      - {channel: voice, timeout: 5s}
  flash_no_answer_moves_on:
    flashcall_no_answer: fallback
    steps:
      - {channel: flashcall, timeout: 5s, providers: [vp]}
      - {channel: voice, providers: [vp]}
  gateway_flash:
    steps:
      - {channel: flashcall, timeout: 1s, providers: [gw]}
      - {channel: voice, providers: [vp]}
limits:
  per_phone: [{limit: 100, per: 1m}]
"""


@pytest.fixture(scope="module")
def with_callbacks(own_stack: OwnStack) -> Iterator[tuple[LocalStack, ManagedProcess]]:
    with own_stack(ROUTING) as stack:
        _, url = stack.start_callbacks()
        worker = stack.start_worker(
            processes=1,
            threads=16,
            env={"FLASHCALL_CALLBACK_BASE_URL": url, "FLASHCALL_STATE_INTERVAL_MS": "200"},
        )
        yield stack, worker


@pytest.fixture(scope="module")
def polling(own_stack: OwnStack) -> Iterator[LocalStack]:
    with own_stack(ROUTING) as stack:
        stack.start_worker(processes=1, threads=16, env={"FLASHCALL_STATE_INTERVAL_MS": "200"})
        yield stack


def tools(stack: LocalStack) -> tuple[Producer, Sandbox]:
    return Producer.from_url(stack.redis_url), Sandbox(stack.sandbox_url)


def names(producer: Producer, verification_id: str) -> list[str]:
    return [event["event"] for event in producer.events(verification_id)]


def on(channel: str) -> Callable[[dict[str, str]], bool]:
    return lambda event: event.get("channel") == channel


def callback_posts(sandbox: Sandbox, phone: str) -> list[dict[str, Any]]:
    return [record for record in sandbox.records(phone) if record.get("callback_status")]


def wait_for_callback(sandbox: Sandbox, phone: str, count: int = 1) -> list[dict[str, Any]]:
    """Until the sandbox has posted `count` callbacks for the number and had them answered."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        posted = [r for r in callback_posts(sandbox, phone) if r["callback_status"] not in ("pending", None)]
        if len(posted) >= count:
            return posted
        time.sleep(0.05)
    raise TimeoutError(f"the sandbox posted no callback for {phone}")


def test_voice_unanswered_falls_back_to_sms_whose_code_approves(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"state": "NO ANSWER"})
    producer.start("voice-sms", "+" + phone, policy="voice_then_sms")
    failed = producer.wait_for("voice-sms", {"attempt_failed"}, timeout=15)
    assert (failed["reason"], failed["error_code"], failed["channel"]) == ("no_answer", "NO ANSWER", "voice")
    sms = producer.wait_for("voice-sms", {"delivered"}, timeout=15, where=on("sms"))
    assert sms["provider"] == "vp"
    code = [m for m in sandbox.inbox(phone) if m["channel"] == "sms"][-1]["code"]
    assert producer.check("voice-sms", code)["result"] == "approved"
    assert names(producer, "voice-sms") == [
        "created",
        "attempt_started",
        "delivered",
        "attempt_failed",
        "fallback",
        "attempt_started",
        "delivered",
        "approved",
    ]


def test_a_busy_voice_call_moves_to_the_next_provider_for_the_channel(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"state": "BUSY"})
    producer.start("busy", "+" + phone, policy="voice")
    fallback = producer.wait_for("busy", {"fallback"}, timeout=15)
    assert (fallback["reason"], fallback["from_provider"], fallback["provider"], fallback["channel"]) == (
        "busy",
        "vp",
        "vp2",
        "voice",
    )


def test_a_failed_call_is_a_provider_error_that_moves_on(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"state": "FAIL"})
    producer.start("fail", "+" + phone, policy="voice")
    assert producer.wait_for("fail", {"fallback"}, timeout=15)["reason"] == "provider_error"


def test_an_unanswered_flash_call_has_shown_its_code_and_waits_for_it(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    producer.start("flash-no-answer", "+" + phone)
    producer.wait_for("flash-no-answer", {"delivered"})
    assert wait_for_callback(sandbox, phone)[0]["state"] == "NO ANSWER"
    code = sandbox.inbox(phone)[-1]["code"]
    assert producer.check("flash-no-answer", code)["result"] == "approved"
    assert "attempt_failed" not in names(producer, "flash-no-answer")


def test_a_policy_can_move_on_from_an_unanswered_flash_call(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, _ = tools(with_callbacks[0])
    phone = new_phone()
    producer.start("flash-moves-on", "+" + phone, policy="flash_no_answer_moves_on")
    fallback = producer.wait_for("flash-moves-on", {"fallback"}, timeout=15)
    assert (fallback["reason"], fallback["from_channel"], fallback["channel"]) == (
        "no_answer",
        "flashcall",
        "voice",
    )


def test_a_gateway_flash_call_with_no_outcome_moves_on_at_its_step_timeout(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    producer.start("gateway-timeout", "+" + phone, policy="gateway_flash")
    delivered = producer.wait_for("gateway-timeout", {"delivered"})
    assert delivered["provider"] == "gw"
    fallback = producer.wait_for("gateway-timeout", {"fallback"}, timeout=15)
    assert (fallback["reason"], fallback["from_provider"], fallback["provider"], fallback["channel"]) == (
        "timeout",
        "gw",
        "vp",
        "voice",
    )
    assert sandbox.records(phone, provider="gateway")[0]["callback_status"] is None


def test_a_callback_delivered_twice_moves_the_verification_on_once(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"state": "BUSY", "callback_delay_ms": 200})
    producer.start("twice", "+" + phone, policy="voice")
    producer.wait_for("twice", {"fallback"}, timeout=15)
    [call] = [r for r in sandbox.records(phone) if r["callback_status"] and r["state"] == "BUSY"]
    response = httpx.post(call["body"]["callback_url"], json=callback_body(call), timeout=5)
    assert (response.status_code, response.json()) == (200, {"ok": True, "repeat": True})
    wait_for_message_drained(producer)
    assert names(producer, "twice").count("attempt_failed") == 1
    assert names(producer, "twice").count("fallback") == 1


def test_a_callback_after_cancel_is_refused_and_changes_nothing(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"state": "BUSY", "callback_delay_ms": 1500})
    producer.start("canceled", "+" + phone, policy="voice")
    producer.wait_for("canceled", {"delivered"})
    producer.cancel("canceled")
    assert wait_for_callback(sandbox, phone)[0]["callback_status"] == "410"
    assert producer.status("canceled")["status"] == "canceled"
    assert "fallback" not in names(producer, "canceled")


def test_a_late_callback_for_an_approved_verification_is_refused_and_ignored(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    sandbox.script(phone, {"callback_delay_ms": 1500})
    producer.start("approved-first", "+" + phone)
    producer.wait_for("approved-first", {"delivered"})
    assert producer.check("approved-first", sandbox.inbox(phone)[-1]["code"])["result"] == "approved"
    assert wait_for_callback(sandbox, phone)[0]["callback_status"] == "410"
    assert producer.status("approved-first")["status"] == "approved"


def test_a_status_message_about_another_call_does_not_move_the_verification_on(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    producer.start("forged", "+" + phone, policy="voice")
    producer.wait_for("forged", {"delivered"})
    wait_for_callback(sandbox, phone)
    # Queued without the receiver (by whoever may write the queue): BUSY, for another call.
    status = {"ref": "not-this-call", "state": "busy", "provider_state": "BUSY", "price": None}
    enqueue(producer, "call_status", ["forged", 1, "vp", status])
    wait_for_message_drained(producer)
    assert producer.status("forged")["status"] == "sent"
    assert "attempt_failed" not in names(producer, "forged")


def test_an_approval_racing_the_step_timeout_ends_approved_with_no_further_call(
    with_callbacks: tuple[LocalStack, ManagedProcess], new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(with_callbacks[0])
    phone = new_phone()
    producer.start("race", "+" + phone)
    producer.wait_for("race", {"delivered"})
    code = sandbox.inbox(phone)[-1]["code"]
    # The step's deadline falls due now, as the user types the code.
    producer.client.zadd(keys.PREFIX + "timers:step", {"race": 0})
    assert producer.check("race", code)["result"] == "approved"
    wait_for_message_drained(producer)
    trail = names(producer, "race")
    assert trail[-1] == "approved"
    assert trail.count("attempt_started") == 1
    assert producer.status("race")["status"] == "approved"


def test_without_a_callback_url_the_router_polls_the_call_state(
    polling: LocalStack, new_phone: Callable[[], str]
) -> None:
    producer, sandbox = tools(polling)
    phone = new_phone()
    sandbox.script(phone, {"state": "BUSY", "callback_delay_ms": 500})
    producer.start("polled", "+" + phone, policy="voice")
    fallback = producer.wait_for("polled", {"fallback"}, timeout=20)
    assert (fallback["reason"], fallback["provider"]) == ("busy", "vp2")
    url = f"{polling.sandbox_url}/_sandbox/records"
    records = httpx.get(url, params={"provider": "voicepassword"}).json()
    states = [r for r in records["records"] if r["kind"] == "get" and r["body"].get("request") == "state"]
    assert states, "the worker never asked /get/ for the call's state"
    assert all(record["callback_status"] is None for record in sandbox.records(phone))


def callback_body(record: dict[str, Any]) -> dict[str, str]:
    return {
        "id": record["id"],
        "number": record["number"],
        "duration": "0",
        "state": record["state"],
        "price": record["price"],
        "date": "2026-11-27 12:00:00",
    }


def enqueue(producer: Producer, actor: str, arguments: list[Any]) -> None:
    """A Dramatiq message on the verifications queue, as the library's functions write one."""
    message_id = f"test-{time.monotonic_ns()}"
    body = {
        "queue_name": keys.VERIFY_QUEUE,
        "actor_name": actor,
        "args": arguments,
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    producer.client.hset(keys.queue_messages(keys.VERIFY_QUEUE), message_id, json.dumps(body))
    producer.client.rpush(keys.queue(keys.VERIFY_QUEUE), message_id)
    producer.client.rpush(keys.wake(keys.VERIFY_QUEUE), "1")


def wait_for_message_drained(producer: Producer, timeout: float = 10.0) -> None:
    """Until the verifications queue holds no message, in flight or waiting."""
    deadline = time.monotonic() + timeout
    while producer.client.hlen(keys.queue_messages(keys.VERIFY_QUEUE)):
        if time.monotonic() > deadline:
            raise TimeoutError("messages still unprocessed")
        time.sleep(0.05)
