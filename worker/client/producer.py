"""A Python producer: the FCALL contract of docs/protocol.md, typed.

Backends in other languages send the same commands (docs/protocol.md has redis-cli,
Node, PHP and Go); the demo, the tests and the benchmarks use this client.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import redis

from worker.core import keys
from worker.core.errors import StoreUnavailable
from worker.redis import functions
from worker.redis.connections import sync_client

__all__ = ["CheckTimeout", "Event", "Producer", "StoreUnavailable"]

Event = dict[str, str]

T = TypeVar("T")


class CheckTimeout(Exception):
    """No answer to a check arrived on its reply key in time."""


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Never a silent drop: a request no primary answered (Redis down, or Sentinel failing
    over for longer than redis-py's retries) raises, and every function is safe to send
    again (a start with the same id calls nobody twice)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise StoreUnavailable(
            f"{what}: no Redis primary answered ({error}); the request may not have been taken: send it again"
        ) from error


class Producer:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> Producer:
        """Any form of REDIS_URL, a Sentinel one included (worker/redis/connections.py)."""
        return cls(sync_client(url, decode_responses=True))

    @property
    def client(self) -> redis.Redis:
        return self._client

    def close(self) -> None:
        self._client.close()

    def _run(self, call: functions.Call[T]) -> T:
        with _unavailable(call.name):
            return call.run(self._client)

    def start(self, verification_id: str, phone: str, **fields: Any) -> dict[str, Any]:
        request = {"id": verification_id, "phone": phone, **fields}
        return self._run(functions.start(json.dumps(request)))

    def check(self, verification_id: str, code: str, *, timeout: float = 5.0) -> dict[str, Any]:
        reply_key = self._run(functions.check(json.dumps({"id": verification_id, "code": code})))
        with _unavailable("the check's answer"):
            popped = cast(tuple[str, str] | None, self._client.blpop([reply_key], timeout))
        if popped is None:
            raise CheckTimeout(f"no answer on {reply_key} within {timeout} s")
        return cast(dict[str, Any], json.loads(popped[1]))

    def status(self, verification_id: str) -> dict[str, Any]:
        return self._run(functions.status(verification_id))

    def cancel(self, verification_id: str) -> dict[str, Any]:
        return self._run(functions.cancel(verification_id))

    def events(self, verification_id: str) -> list[Event]:
        """Every event of one verification so far, oldest first."""
        entries = cast(list[tuple[str, Event]], self._client.xrange(keys.EVENTS))
        return [fields for _, fields in entries if fields.get("id") == verification_id]

    def wait_for(
        self,
        verification_id: str,
        events: set[str],
        *,
        timeout: float = 30.0,
        where: Callable[[Event], bool] = lambda _: True,
    ) -> Event:
        """The first event of the verification among `events` (and matching `where`), from the
        start of the stream, waiting for it with XREAD BLOCK."""
        deadline = time.monotonic() + timeout
        last = "0-0"
        while time.monotonic() < deadline:
            answer = cast(
                list[tuple[str, list[tuple[str, Event]]]] | None,
                self._client.xread({keys.EVENTS: last}, block=250),
            )
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if (
                        fields.get("id") == verification_id
                        and fields.get("event") in events
                        and where(fields)
                    ):
                        return fields
        raise TimeoutError(f"{verification_id} reached none of {sorted(events)} within {timeout} s")
