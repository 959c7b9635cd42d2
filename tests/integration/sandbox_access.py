"""What the MobilGroup and VoicePassword tests need beyond tests/support.py's `Sandbox`: adapters
pointed at the session's sandbox, records of requests that name no number, balances, and a
check that every value of a recorded body is a JSON string."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import httpx

from flashcall_dev.sandbox.app import PROVIDERS as SANDBOX_PROVIDERS
from flashcall_dev.stack import LocalStack
from worker.providers.base import Provider
from worker.providers.registry import PROVIDER_TYPES

__all__ = ["adapter", "all_strings", "balance_set_to", "provider_records", "run"]

_P = TypeVar("_P", bound=Provider)
_T = TypeVar("_T")
_CREDENTIALS = {spec.name: spec.credentials for spec in SANDBOX_PROVIDERS}
TIMEOUT = 2.0


def adapter(stack: LocalStack, kind: str, options: Mapping[str, str] | None = None) -> Provider:
    """A `kind` adapter with the sandbox's credentials, pointed at the sandbox's imitation."""
    return PROVIDER_TYPES[kind].from_config(
        f"{kind}-contract",
        base_url=stack.provider_urls[kind],
        timeout=TIMEOUT,
        credentials=_CREDENTIALS[kind],
        options=dict(options or {}),
    )


def run(provider: _P, call: Callable[[_P], Awaitable[_T]]) -> _T:
    """`call(provider)` in an event loop of its own; the provider's connections closed after it."""

    async def once() -> _T:
        try:
            return await call(provider)
        finally:
            await provider.aclose()

    return asyncio.run(once())


def provider_records(stack: LocalStack, provider: str) -> list[dict[str, Any]]:
    """Every request the provider's imitation received, oldest first, numbered or not."""
    answer = httpx.get(f"{stack.sandbox_url}/_sandbox/records", params={"provider": provider}, timeout=5)
    answer.raise_for_status()
    return cast(list[dict[str, Any]], answer.json()["records"])


def _set_balance(stack: LocalStack, provider: str, balance: str) -> None:
    answer = httpx.post(
        f"{stack.sandbox_url}/_sandbox/balance", json={"provider": provider, "balance": balance}, timeout=5
    )
    answer.raise_for_status()


@contextlib.contextmanager
def balance_set_to(
    stack: LocalStack, provider: str, balance: str, *, then: str = "1000.00"
) -> Iterator[None]:
    """The provider's sandbox account holds `balance` inside the block, `then` after it."""
    _set_balance(stack, provider, balance)
    try:
        yield
    finally:
        _set_balance(stack, provider, then)


def all_strings(value: Any) -> bool:
    """Whether every value in a JSON body is a string, as the documents write numbers ("4")."""
    if isinstance(value, dict):
        return all(all_strings(item) for item in value.values())
    return isinstance(value, str)
