"""The callback receiver's connection limits, over real sockets against `flashcall callbacks`.

A connection that never finishes its headers, or trickles them or its body, is closed
within a bounded time (here: before three times its deadline, a generous bound, not a
measurement), while callbacks from well-behaved clients keep getting through; past
`--max-connections`, requests are answered 503.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from flashcall_dev.stack import LocalStack, local_stack
from tests.support import CALLBACK, closed_by, connect, issue_token, trickle
from worker.redis.library import install

pytestmark = pytest.mark.integration

DEADLINE_S = 1
#: Closed before this long: three times the deadline.
BOUND_S = 3 * DEADLINE_S
MAX_CONNECTIONS = 20
DEADLINES = ["--header-timeout", str(DEADLINE_S), "--body-timeout", str(DEADLINE_S), "--idle-timeout", "1"]
HEADERS_BEGUN = b"POST /callbacks/vp/tok-1 HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with local_stack() as started:
        yield started


@pytest.fixture(scope="module")
def receiver(stack: LocalStack) -> str:
    _, url = stack.start_callbacks(args=DEADLINES)
    return url


@pytest.fixture
def client(stack: LocalStack) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    connection.flushall()
    install(connection)
    issue_token(connection, "tok-1")
    yield connection
    connection.close()


def a_callback_gets_through(url: str) -> bool:
    response = httpx.post(f"{url}/callbacks/vp/tok-1", json=CALLBACK, timeout=BOUND_S)
    return response.status_code == 200


def test_connections_that_never_finish_their_headers_are_closed(receiver: str, client: redis.Redis) -> None:
    with contextlib.ExitStack() as sockets:
        held = [sockets.enter_context(connect(receiver, BOUND_S)) for _ in range(100)]
        for sock in held[:50]:
            sock.sendall(HEADERS_BEGUN)  # the other 50 send nothing at all
        assert a_callback_gets_through(receiver)
        deadline = time.monotonic() + BOUND_S
        assert [closed_by(sock, deadline) for sock in held] == [True] * 100


def test_headers_trickled_a_byte_at_a_time_are_cut_off(receiver: str) -> None:
    with connect(receiver, BOUND_S) as sock:
        assert trickle(sock, HEADERS_BEGUN * 10, time.monotonic() + BOUND_S)


def test_a_body_trickled_a_byte_at_a_time_is_cut_off(receiver: str, client: redis.Redis) -> None:
    body = b'{"id": "100042", "state": "NO ANSWER", "padding": "' + b"x" * 100 + b'"}'
    with connect(receiver, BOUND_S) as sock:
        sock.sendall(HEADERS_BEGUN + f"Content-Length: {len(body)}\r\n\r\n".encode())
        assert trickle(sock, body, time.monotonic() + BOUND_S)
        assert a_callback_gets_through(receiver)


def test_an_idle_kept_alive_connection_is_closed(receiver: str) -> None:
    with connect(receiver, BOUND_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: receiver\r\n\r\n")
        assert closed_by(sock, time.monotonic() + BOUND_S)


def test_past_the_connection_cap_requests_are_answered_503(stack: LocalStack, client: redis.Redis) -> None:
    process, url = stack.start_callbacks(
        name="callbacks-capped", args=["--max-connections", str(MAX_CONNECTIONS), "--header-timeout", "30"]
    )
    try:
        with contextlib.ExitStack() as sockets:
            for _ in range(MAX_CONNECTIONS):
                sockets.enter_context(connect(url, BOUND_S))
            assert httpx.post(f"{url}/callbacks/vp/tok-1", json=CALLBACK, timeout=5).status_code == 503
        # Once the receiver has seen them close (at once, but asynchronously):
        answers: list[int] = []
        while 200 not in answers and len(answers) < 50:
            answers.append(httpx.post(f"{url}/callbacks/vp/tok-1", json=CALLBACK, timeout=5).status_code)
            time.sleep(0.1)
        assert set(answers) <= {503, 200}
        assert answers[-1] == 200
    finally:
        process.stop()
