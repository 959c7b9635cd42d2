"""The callback receiver (`flashcall callbacks`) over real HTTP, on a Redis with no worker.

A post is accepted only when its token was issued for that provider, its body is the
provider's callback, and its call id is the attempt's own call; only then is a
`call_status` message queued, and only then is it answered 200. A repeat is answered 200
and queues nothing; a token whose attempt has an outcome takes nothing new. Everything
else changes nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess, local_stack
from tests.support import CALLBACK, deliver, issue_token
from worker.core import keys
from worker.redis import functions
from worker.redis.library import install

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[LocalStack, str]]:
    with local_stack() as stack:
        _, url = stack.start_callbacks()
        yield stack, url


@pytest.fixture
def client(receiver: tuple[LocalStack, str]) -> Iterator[redis.Redis]:
    stack, _ = receiver
    connection = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    connection.flushall()
    install(connection)
    yield connection
    connection.close()


def post(receiver: tuple[LocalStack, str], path: str, body: Any) -> httpx.Response:
    _, url = receiver
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, timeout=5)


def queued_statuses(client: redis.Redis) -> list[dict[str, Any]]:
    ids = cast(list[str], client.lrange(keys.queue(keys.VERIFY_QUEUE), 0, -1))
    bodies = cast(list[str], client.hmget(keys.queue_messages(keys.VERIFY_QUEUE), ids)) if ids else []
    return [message for message in map(json.loads, bodies) if message["actor_name"] == "call_status"]


def test_a_callback_with_an_issued_token_is_queued_for_the_workers(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    response = post(receiver, "/callbacks/vp/tok-1", CALLBACK)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    [message] = queued_statuses(client)
    assert message["args"] == [
        "order-42",
        1,
        "vp",
        {"ref": "100042", "state": "no_answer", "provider_state": "NO ANSWER", "price": "0.35"},
    ]


def test_a_callback_wakes_idle_workers(receiver: tuple[LocalStack, str], client: redis.Redis) -> None:
    issue_token(client, "tok-1")
    client.delete(keys.wake(keys.VERIFY_QUEUE))
    post(receiver, "/callbacks/vp/tok-1", CALLBACK)
    assert client.llen(keys.wake(keys.VERIFY_QUEUE)) == 1


def test_an_unknown_token_is_refused_and_changes_nothing(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    response = post(receiver, "/callbacks/vp/guessed-token", CALLBACK)
    assert response.status_code == 404
    assert queued_statuses(client) == []


def test_a_token_posted_under_another_providers_name_is_refused(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1", provider="vp")
    assert post(receiver, "/callbacks/mg/tok-1", CALLBACK).status_code == 404
    assert queued_statuses(client) == []


@pytest.mark.parametrize(
    "body",
    [
        b"state=NO ANSWER",
        [CALLBACK],
        {**CALLBACK, "state": "MAYBE"},
        {key: value for key, value in CALLBACK.items() if key != "id"},
    ],
    ids=["not JSON", "a JSON list", "an unknown state", "no id"],
)
def test_a_post_that_is_not_the_providers_callback_is_refused(
    receiver: tuple[LocalStack, str], client: redis.Redis, body: Any
) -> None:
    issue_token(client, "tok-1")
    response = post(receiver, "/callbacks/vp/tok-1", body)
    assert response.status_code == 400
    assert "not a voicepassword callback" in response.json()["error"]
    assert queued_statuses(client) == []


def test_an_oversized_post_is_refused(receiver: tuple[LocalStack, str], client: redis.Redis) -> None:
    issue_token(client, "tok-1")
    assert post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "padding": "x" * 70_000}).status_code == 413
    assert queued_statuses(client) == []


def test_a_repeated_callback_is_answered_200_and_queues_nothing_after_the_first(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    answers = [post(receiver, "/callbacks/vp/tok-1", CALLBACK) for _ in range(50)]
    assert [answer.status_code for answer in answers] == [200] * 50
    assert [answer.json() for answer in answers[1:]] == [{"ok": True, "repeat": True}] * 49
    assert len(queued_statuses(client)) == 1


def test_a_callback_with_another_calls_id_is_refused_and_changes_nothing(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-a", verification_id="order-a", phone="+79991234501", call_id="100001")
    issue_token(client, "tok-b", verification_id="order-b", phone="+79991234502", call_id="100002")
    record = client.get(keys.callback_token("tok-a"))
    # Verification A's token with verification B's call id.
    response = post(receiver, "/callbacks/vp/tok-a", {**CALLBACK, "id": "100002", "state": "BUSY"})
    assert (response.status_code, response.json()["error"]) == (409, "the call id is not this attempt's call")
    assert queued_statuses(client) == []
    assert client.get(keys.callback_token("tok-a")) == record


def test_a_token_takes_no_other_state_once_a_final_one_was_taken_in(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    assert post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "state": "ANSWERED"}).status_code == 200
    response = post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "state": "BUSY"})
    assert (response.status_code, response.json()["error"]) == (410, "this attempt already has an outcome")
    assert len(queued_statuses(client)) == 1


def test_states_in_progress_are_each_taken_in_once_before_the_final_one(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    posted = ["QUEUED", "QUEUED", "SEND", "DELIVERED", "NOT DELIVERED"]
    answers = [post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "state": state}) for state in posted]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 410]
    assert [message["args"][3]["provider_state"] for message in queued_statuses(client)] == [
        "QUEUED",
        "SEND",
        "DELIVERED",
    ]


OUTCOMES: dict[str, functions.Call[Any]] = {
    "the attempt timed out": functions.attempt_failed(
        "order-42",
        attempt=1,
        now_ms=0,
        outcome="timeout",
        error_code="step_timeout",
        state="timed_out",
        recovery_at_ms=0,
        discard_code=False,
        provider_fault=False,
        latency_ms=-1,
        no_money_ms=0,
    ),
    "the verification was canceled": functions.cancel("order-42"),
    "the verification was approved": functions.apply_check(
        "order-42", proof="1", reply_key="flashcall:reply:1", now_ms=0
    ),
}


@pytest.mark.parametrize("outcome", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_a_token_is_dead_once_its_attempt_has_an_outcome(
    receiver: tuple[LocalStack, str], client: redis.Redis, outcome: functions.Call[Any]
) -> None:
    issue_token(client, "tok-1")
    outcome.run(client)
    client.delete(keys.queue(keys.VERIFY_QUEUE))
    assert post(receiver, "/callbacks/vp/tok-1", CALLBACK).status_code == 410
    assert queued_statuses(client) == []


def test_a_callback_before_the_delivery_is_recorded_is_held_and_queued_with_the_delivery(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1", call_id=None)
    response = post(receiver, "/callbacks/vp/tok-1", CALLBACK)
    assert (response.status_code, response.json()) == (202, {"ok": True, "held": True})
    assert queued_statuses(client) == []
    deliver(client, CALLBACK["id"])
    [message] = queued_statuses(client)
    assert message["args"][:2] == ["order-42", 1]
    assert post(receiver, "/callbacks/vp/tok-1", CALLBACK).json() == {"ok": True, "repeat": True}


def test_a_held_callback_of_another_call_is_dropped_when_the_delivery_is_recorded(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1", call_id=None)
    assert post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "id": "999999"}).status_code == 202
    deliver(client, CALLBACK["id"])
    assert queued_statuses(client) == []
    assert post(receiver, "/callbacks/vp/tok-1", {**CALLBACK, "id": "999999"}).status_code == 409


def test_the_verification_keeps_only_the_tokens_digest(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    stored = cast(dict[str, str], client.hgetall(keys.verification("order-42")))
    assert "tok-1" not in json.dumps(stored)
    assert keys.callback_token("tok-1").endswith(stored["callback"])


def test_the_token_outlives_the_verification_so_that_late_callbacks_are_recognised(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    assert client.pttl(keys.callback_token("tok-1")) > 600_000 + 86_000_000


def test_redis_unreachable_answers_503(receiver: tuple[LocalStack, str]) -> None:
    stack, _ = receiver
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = LocalStack(
        redis_url=f"redis://127.0.0.1:{dead_port}/0",
        sandbox_url=stack.sandbox_url,
        provider_urls=stack.provider_urls,
        log_dir=stack.log_dir,
    )
    process: ManagedProcess
    process, url = dead.start_callbacks(name="callbacks-without-redis")
    try:
        response = httpx.post(f"{url}/callbacks/vp/tok-1", content=json.dumps(CALLBACK).encode(), timeout=20)
        assert response.status_code == 503
    finally:
        process.stop()
