"""Helpers the tests share: the sandbox's control API, the library's clock, and callback
tokens issued as a worker issues them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess
from worker.redis import functions
from worker.redis.functions import AdmissionGuard

#: A VoicePassword status callback, as the provider posts it.
CALLBACK = {
    "id": "100042",
    "number": "79991234567",
    "duration": "0",
    "state": "NO ANSWER",
    "price": "0.35",
    "date": "2026-11-27 15:18:48",
}

#: What a worker claims a VoicePassword attempt under: a breaker of 5 failures, a 30 s
#: reset and lease, 0.35 roubles a call, no budget.
GUARD = AdmissionGuard(
    reset_ms=30_000, lease_ms=30_000, fail_max=5, cost_e4=3500, budget_e4=0, day="20261127"
)

#: The `own_stack` fixture: `with own_stack(ROUTING) as stack` starts redis-server and the
#: sandbox on a routing file of this text, for a module whose routing differs.
OwnStack = Callable[[str], AbstractContextManager[LocalStack]]

__all__ = [
    "API_KEY",
    "CALLBACK",
    "GUARD",
    "Api",
    "OwnStack",
    "Sandbox",
    "advance_message",
    "cases",
    "closed_by",
    "connect",
    "deliver",
    "issue_token",
    "redis_now",
    "trickle",
]


#: The `shop` client's key of the session's API (tests only; at least 32 characters).
API_KEY = "test-shop-key-0123456789abcdefghijklmnop"


@dataclass(frozen=True)
class Api:
    """A running `flashcall api`: its base URL, the `shop` key it takes, its metrics."""

    url: str
    key: str
    metrics_url: str
    process: ManagedProcess


class Sandbox:
    """The sandbox's control API, as tests use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=10)

    def script(self, number: str, *steps: dict[str, Any], provider: str = "voicepassword") -> None:
        response = self._http.post(
            "/_sandbox/script", json={"provider": provider, "number": number, "steps": list(steps)}
        )
        response.raise_for_status()

    def inbox(self, number: str) -> list[dict[str, Any]]:
        messages = self._http.get(f"/_sandbox/inbox/{number}").json()["messages"]
        return cast(list[dict[str, Any]], messages)

    def records(self, number: str, provider: str = "voicepassword") -> list[dict[str, Any]]:
        answer = self._http.get("/_sandbox/records", params={"provider": provider, "number": number})
        return cast(list[dict[str, Any]], answer.json()["records"])

    def calls(self, number: str) -> list[dict[str, Any]]:
        """Requests that placed a call or sent an SMS to the number."""
        return [record for record in self.records(number) if record.get("id")]

    def close(self) -> None:
        self._http.close()


def cases(name: str) -> list[dict[str, Any]]:
    """A table of tests/cases/: inputs with what the library and the Python side both make of
    them ('normal', the stored form or null for refused; 'valid'), and why."""
    path = Path(__file__).parent / "cases" / f"{name}.json"
    return cast(list[dict[str, Any]], json.loads(path.read_text(encoding="utf-8")))


def redis_now(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def issue_token(
    client: redis.Redis,
    token: str,
    *,
    verification_id: str = "order-42",
    phone: str = "+79991234567",
    provider: str = "vp",
    provider_type: str = "voicepassword",
    call_id: str | None = CALLBACK["id"],
) -> None:
    """Start a verification and claim its first attempt with a callback token, as a worker
    does; then record its delivery as the call `call_id` (None: the provider has not answered yet)."""
    functions.start(json.dumps({"id": verification_id, "phone": phone})).run(client)
    now = redis_now(client)
    claim = functions.begin_attempt(
        verification_id,
        expected_attempt=0,
        now_ms=now,
        step=0,
        channel="voice",
        provider=provider,
        code_hash="",
        deadline_ms=now + 30_000,
        guard=GUARD,
        callback_token=token,
        provider_type=provider_type,
    ).run(client)
    assert claim.result == "ok"
    if call_id is not None:
        deliver(client, call_id, verification_id=verification_id, provider=provider)


def deliver(
    client: redis.Redis, call_id: str, *, verification_id: str = "order-42", provider: str = "vp"
) -> None:
    """Record the first attempt delivered as the provider's call `call_id`, as a worker does."""
    now = redis_now(client)
    answer = functions.attempt_delivered(
        verification_id,
        attempt=1,
        now_ms=now,
        provider=provider,
        channel="voice",
        step=0,
        ref=call_id,
        price_e4=3500,
        code_hash="",
        provider_checks=False,
        step_deadline_ms=now + 30_000,
        latency_ms=100,
        day=GUARD.day,
    ).run(client)
    assert answer == "ok"


def advance_message(queue: str, message_id: str) -> dict[str, Any]:
    """The body of an `advance` message as the library queues it on `queue`."""
    return {
        "queue_name": queue,
        "actor_name": "advance",
        "args": [message_id, 0, "start"],
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": 0,
    }


def connect(url: str, timeout: float) -> socket.socket:
    """A raw connection to an HTTP server, for clients that misbehave."""
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def closed_by(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes the connection before `deadline` (time.monotonic()),
    whatever it writes first."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def trickle(sock: socket.socket, data: bytes, deadline: float) -> bool:
    """Send `data` a byte at a time, 0.2 s apart; whether the server closed the
    connection before `deadline`."""
    for byte in data:
        if time.monotonic() >= deadline:
            return False
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        if closed_by(sock, min(deadline, time.monotonic() + 0.2)):
            return True
    return closed_by(sock, deadline)
