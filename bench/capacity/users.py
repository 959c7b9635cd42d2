"""The people behind the numbers, for a backlog: each types the code their phone showed
THINK_S after the router recorded the call as delivered.

bench.chaos.traffic.Users looks a fixed 1.5 s after a call began. Under the backlog this
measurement builds on purpose, a process runs its 512 calls at once on a busy CPU and
records a delivery seconds after the call began; a code typed before then is rejected
(the router does not know it yet) and that user never types again, so the verification
is never approved. Waiting for `delivered` keeps every verification on the path
start -> call -> check -> approved however long the backlog.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any, cast

import httpx

from bench.chaos.traffic import Traffic
from worker.core import keys
from worker.core.errors import FlashcallError
from worker.redis import functions
from worker.redis.connections import sync_client

__all__ = ["Users"]

THINK_S = 1.0
"""From the delivery to the typed code."""


class Users:
    def __init__(self, redis_url: str, sandbox_url: str, traffic: Traffic) -> None:
        self._redis_url = redis_url
        self._sandbox_url = sandbox_url
        self._traffic = traffic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._failure: Exception | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A step that failed before the load never started them.
        if self._thread.ident is not None:
            self._thread.join(10)
        if self._failure is not None:
            raise FlashcallError(f"the simulated users stopped: {self._failure!r}") from self._failure

    def _run(self) -> None:
        try:
            self._type_codes()
        except Exception as error:  # noqa: BLE001 - handed to stop(), or the step would wait on users gone
            self._failure = error

    def _type_codes(self) -> None:
        client = sync_client(self._redis_url, decode_responses=True, socket_timeout=5)
        sandbox = httpx.Client(base_url=self._sandbox_url, timeout=5)
        # Every user thinks as long: the checks fall due in the order the deliveries came.
        due: deque[tuple[float, str]] = deque()
        # The step begins on an empty database: the whole stream is this step's.
        cursor = "0-0"
        try:
            while not self._stop.is_set():
                answer = cast(list[Any], client.xread({keys.EVENTS: cursor}, block=50, count=2000) or [])
                for _, entries in answer:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        if fields.get("event") == "delivered":
                            due.append((time.monotonic() + THINK_S, fields["id"]))
                while due and due[0][0] <= time.monotonic():
                    _, verification = due.popleft()
                    phone = self._traffic.accepted.get(verification)
                    if phone is None:
                        # Delivered before the producer's pipeline of starts returned.
                        due.append((time.monotonic() + THINK_S, verification))
                        continue
                    messages = sandbox.get(f"/_sandbox/inbox/{phone}").json()["messages"]
                    request = json.dumps({"id": verification, "code": messages[-1]["code"]})
                    functions.check(request).run(client)
        finally:
            client.close()
            sandbox.close()
