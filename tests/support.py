"""Helpers the tests share: the sandbox's control API and calls into the Redis library."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from worker.stack import LocalStack

#: The `own_stack` fixture: `with own_stack(ROUTING) as stack` starts redis-server and the
#: sandbox on a routing file of this text, for a module whose routing differs.
OwnStack = Callable[[str], AbstractContextManager[LocalStack]]

__all__ = ["OwnStack", "Sandbox", "cases", "fcall"]


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


def fcall(client: redis.Redis, function: str, *args: str | int) -> Any:
    """Call a library function; JSON answers come back decoded."""
    answer = client.fcall(function, 0, *args)
    if isinstance(answer, str) and answer[:1] in "{[":
        return json.loads(answer)
    return answer


def cases(name: str) -> list[dict[str, Any]]:
    """A table of tests/cases/: inputs with what the library and the Python side both make of
    them ('normal', the stored form or null for refused; 'valid'), and why."""
    path = Path(__file__).parent / "cases" / f"{name}.json"
    return cast(list[dict[str, Any]], json.loads(path.read_text(encoding="utf-8")))
