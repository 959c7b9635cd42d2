"""Driving an HTTP adapter through a stubbed transport (`httpx.MockTransport`, installed with
`provider.set_transport`): the handlers below stand in for the provider, no network is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from worker.providers.base import HttpProvider

__all__ = ["Handler", "answer", "exchange", "hanging", "raising", "raw_answer"]

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
_P = TypeVar("_P", bound=HttpProvider)
_T = TypeVar("_T")


def exchange(
    provider: _P, handler: Handler, call: Callable[[_P], Awaitable[_T]]
) -> tuple[_T, list[httpx.Request]]:
    """Run `call(provider)` with `handler` answering every request; answer its result and what
    was sent. Whatever `call` raises propagates."""
    seen: list[httpx.Request] = []

    async def recording(sent: httpx.Request) -> httpx.Response:
        seen.append(sent)
        answered = handler(sent)
        return answered if isinstance(answered, httpx.Response) else await answered

    provider.set_transport(httpx.MockTransport(recording))

    async def run() -> _T:
        try:
            return await call(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run()), seen


def answer(body: Any, status: int = 200) -> Handler:
    return lambda _: httpx.Response(status, json=body)


def raw_answer(content: bytes, status: int) -> Handler:
    return lambda _: httpx.Response(status, content=content)


def raising(kind: type[httpx.TransportError]) -> Handler:
    def handler(sent: httpx.Request) -> httpx.Response:
        raise kind("stubbed transport fault", request=sent)

    return handler


async def hanging(_: httpx.Request) -> httpx.Response:
    """A provider that never answers."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable: the event is never set")
