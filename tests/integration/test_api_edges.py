"""`flashcall api` at its edges, on a Redis of this module's own with no worker: refused
starts (a per-phone limit of one a minute, a blocked range), a check nobody answers, keys
from a file, a Redis that does not answer or holds no library, and the same connection
limits as the callback receiver (timeouts, connection cap, body limit)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from flashcall_dev.stack import LocalStack, free_port, local_stack, redis_server
from tests.support import API_KEY, closed_by, connect, trickle
from worker.api.keys import hashed_entry
from worker.core import keys
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.redis.library import install

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
BLOCKED_RANGE = "7900555"
DEADLINE_S = 1
#: Closed before this long: three times the deadline, a generous bound, not a measurement.
BOUND_S = 3 * DEADLINE_S
MAX_CONNECTIONS = 20
DEADLINES = ["--header-timeout", str(DEADLINE_S), "--body-timeout", str(DEADLINE_S), "--idle-timeout", "1"]
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
HEADERS_BEGUN = (
    b"POST /v1/verifications HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    + f"Authorization: Bearer {API_KEY}\r\n".encode()
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with local_stack() as started:
        client = redis.Redis.from_url(started.redis_url, decode_responses=True)
        install(client)
        config = PublishedConfig(
            policies=("default",), per_phone=((1, MINUTE_MS),), keyed={}, lists={BLOCKED_RANGE: "blocked"}
        )
        functions.publish_config(config).run(client)
        client.close()
        yield started


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> str:
    _, url = stack.start_api(keys=f"shop:{API_KEY}", args=[*DEADLINES, "--check-timeout", "0.5"])
    return url


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers=AUTHORIZATION, timeout=10) as http:
        yield http


@pytest.fixture
def phone(request: pytest.FixtureRequest) -> str:
    """A number of its own for each test, outside the blocked range."""
    return f"+7999{zlib.crc32(request.node.name.encode()) % 10_000_000:07d}"


def start(client: httpx.Client, verification_id: str, phone: str) -> httpx.Response:
    return client.post("/v1/verifications", json={"id": verification_id, "phone": phone})


def problem(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


class TestRefusedStarts:
    def test_a_start_over_a_limit_is_429_with_retry_after(self, client: httpx.Client, phone: str) -> None:
        start(client, f"first-{phone[1:]}", phone)

        answer = start(client, f"second-{phone[1:]}", phone)

        body = problem(answer)
        assert (answer.status_code, body["reason"], body["limit"]) == (429, "rate_limited", "per_phone")
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert body["retry_after"] == int(answer.headers["retry-after"])

    def test_a_repeat_of_a_refused_id_is_409_without_retry_after(
        self, client: httpx.Client, phone: str
    ) -> None:
        start(client, f"first-{phone[1:]}", phone)
        start(client, f"second-{phone[1:]}", phone)

        answer = start(client, f"second-{phone[1:]}", phone)

        body = problem(answer)
        assert (answer.status_code, body["reason"], body["refusal"]) == (409, "refused_id", "rate_limited")
        assert "retry-after" not in answer.headers

    def test_a_number_of_a_blocked_range_is_403(self, client: httpx.Client) -> None:
        answer = start(client, "blocked-1", f"+{BLOCKED_RANGE}1234")

        assert (answer.status_code, problem(answer)["reason"]) == (403, "blocked")
        assert "retry-after" not in answer.headers


def test_a_check_no_worker_answers_in_time_is_504(client: httpx.Client, phone: str) -> None:
    start(client, "unanswered", phone)

    answer = client.post("/v1/verifications/unanswered/check", json={"code": "1234"})

    assert (answer.status_code, problem(answer)["reason"]) == (504, "check_timeout")


def test_a_check_after_the_lifetime_is_410(client: httpx.Client, stack: LocalStack, phone: str) -> None:
    client.post("/v1/verifications", json={"id": "lapsed", "phone": phone, "ttl": 30})
    with redis.Redis.from_url(stack.redis_url) as direct:
        # The lifetime passed: its end moved into the past rather than waited for.
        direct.hset(keys.verification("lapsed"), "expires_at", 1)

    answer = client.post("/v1/verifications/lapsed/check", json={"code": "1234"})

    assert (answer.status_code, problem(answer)["reason"]) == (410, "expired")


def test_keys_may_come_hashed_from_a_file(stack: LocalStack, tmp_path: Path, phone: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the shop's key\n{hashed_entry('shop', API_KEY)}\n", encoding="utf-8")
    process, url = stack.start_api(
        keys="", name="api-keys-file", env={"FLASHCALL_API_KEYS_FILE": str(keys_file)}
    )
    try:
        answer = httpx.post(
            f"{url}/v1/verifications", json={"id": "from-file", "phone": phone}, headers=AUTHORIZATION
        )
        assert answer.status_code == 201
    finally:
        process.stop()


def test_an_api_without_keys_refuses_to_start(stack: LocalStack) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": stack.redis_url}
    ended = subprocess.run(
        [sys.executable, "-m", "worker", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert ended.returncode == 2
    assert ended.stderr.strip().splitlines() == [
        "flashcall: the API has no keys: set FLASHCALL_API_KEYS (name:key,...) or "
        "FLASHCALL_API_KEYS_FILE; `flashcall api-key NAME` makes one"
    ]


def start_and_ready(stack: LocalStack, redis_url: str, phone: str) -> tuple[httpx.Response, httpx.Response]:
    """A start and /ready of an API in front of `redis_url`."""
    process, url = stack.start_api(keys=f"shop:{API_KEY}", name="api-elsewhere", env={"REDIS_URL": redis_url})
    try:
        answer = httpx.post(
            f"{url}/v1/verifications", json={"id": "nowhere", "phone": phone}, headers=AUTHORIZATION
        )
        return answer, httpx.get(f"{url}/ready")
    finally:
        process.stop()


class TestWithoutRedis:
    def test_a_redis_that_does_not_answer_is_503_with_retry_after(
        self, stack: LocalStack, phone: str
    ) -> None:
        answer, ready = start_and_ready(stack, f"redis://127.0.0.1:{free_port()}/0", phone)

        assert (answer.status_code, problem(answer)["reason"]) == (503, "unavailable")
        assert answer.headers["retry-after"] == "1"
        assert (ready.status_code, problem(ready)["reason"]) == (503, "unavailable")

    def test_a_redis_without_the_library_is_503_and_not_ready(self, stack: LocalStack, phone: str) -> None:
        with redis_server(Path(tempfile.mkdtemp(prefix="flashcall-api-"))) as empty:
            answer, ready = start_and_ready(stack, empty, phone)

        assert (answer.status_code, problem(answer)["reason"]) == (503, "unavailable")
        assert "flashcall redis install" in problem(answer)["detail"]
        assert (ready.status_code, "not installed" in problem(ready)["detail"]) == (503, True)


class TestConnectionLimits:
    def test_connections_that_never_finish_their_headers_are_closed(self, api: str) -> None:
        with contextlib.ExitStack() as sockets:
            held = [sockets.enter_context(connect(api, BOUND_S)) for _ in range(100)]
            for sock in held[:50]:
                sock.sendall(HEADERS_BEGUN)
            assert httpx.get(f"{api}/health", timeout=BOUND_S).status_code == 200
            deadline = time.monotonic() + BOUND_S
            assert [closed_by(sock, deadline) for sock in held] == [True] * 100

    def test_a_body_trickled_a_byte_at_a_time_is_cut_off(self, api: str) -> None:
        body = json.dumps({"id": "trickled", "phone": "+79991230000", "metadata": {"x": "y" * 100}}).encode()
        with connect(api, BOUND_S) as sock:
            sock.sendall(HEADERS_BEGUN + f"Content-Length: {len(body)}\r\n\r\n".encode())
            assert trickle(sock, body, time.monotonic() + BOUND_S)

    def test_an_idle_kept_alive_connection_is_closed(self, api: str) -> None:
        with connect(api, BOUND_S) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
            assert closed_by(sock, time.monotonic() + BOUND_S)

    def test_past_the_connection_cap_requests_are_answered_503(self, stack: LocalStack) -> None:
        process, url = stack.start_api(
            keys=f"shop:{API_KEY}",
            name="api-capped",
            args=["--max-connections", str(MAX_CONNECTIONS), "--header-timeout", "30"],
        )
        try:
            with contextlib.ExitStack() as sockets:
                for _ in range(MAX_CONNECTIONS):
                    sockets.enter_context(connect(url, BOUND_S))
                assert httpx.get(f"{url}/health", timeout=5).status_code == 503
        finally:
            process.stop()
