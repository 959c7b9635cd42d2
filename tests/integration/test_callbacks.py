"""The callback receiver (`flashcall callbacks`) over real HTTP, on a Redis with no worker.

A post is accepted only when its token was issued for that provider and its body is the
provider's callback; only then is a `call_status` message queued, and only then is it
answered 200. Everything else changes nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from tests.support import fcall
from worker import keys
from worker.redis import install
from worker.stack import LocalStack, ManagedProcess, local_stack

pytestmark = pytest.mark.integration

CALLBACK = {
    "id": "100042",
    "number": "79991234567",
    "duration": "0",
    "state": "NO ANSWER",
    "price": "0.35",
    "date": "2026-11-27 15:18:48",
}


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


def issue_token(
    client: redis.Redis, token: str, *, provider: str = "vp", provider_type: str = "voicepassword"
) -> None:
    """Start a verification and claim its first attempt with a callback token, as a worker does."""
    fcall(client, "flashcall_start", json.dumps({"id": "order-42", "phone": "+79991234567"}))
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    answer = fcall(
        client,
        "flashcall_begin_attempt",
        "order-42", 0, now, 0, "voice", provider, "", now + 30_000,
        30_000, 30_000, 5, 3500, 0, "20261127", token, provider_type,
    )  # fmt: skip
    assert answer[0] == "ok"


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


def test_a_callback_posted_twice_is_queued_twice_and_left_to_the_worker_to_settle_once(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    assert [post(receiver, "/callbacks/vp/tok-1", CALLBACK).status_code for _ in range(2)] == [200, 200]
    assert len(queued_statuses(client)) == 2


def test_the_token_outlives_the_verification_so_that_late_callbacks_are_recognised(
    receiver: tuple[LocalStack, str], client: redis.Redis
) -> None:
    issue_token(client, "tok-1")
    assert client.pttl(f"{keys.PREFIX}callback:tok-1") > 600_000 + 86_000_000


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
