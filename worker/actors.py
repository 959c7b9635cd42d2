"""The Dramatiq actors: thin entry points that validate their arguments and hand over.

`dramatiq worker.actors` (or `flashcall worker`) imports this module in each worker
process. Dramatiq binds actors to a broker when they are declared, so the broker is
made here; its Redis client connects lazily, inside the process that uses it.
Everything else a process needs is built at worker boot (worker/process/middleware/boot.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread

from worker.core import keys
from worker.core.errors import BadMessage, StoreUnavailable
from worker.core.verification import CallState
from worker.logs.structured import configure_from_env
from worker.process import runtime
from worker.process.middleware.chain import build_broker
from worker.providers.base import CallStatus
from worker.redis.functions import AskProvider

__all__ = ["advance", "broker", "call_status", "check_code", "poll", "start"]

configure_from_env()
broker = build_broker(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)

#: Redis outages are retried for about a minute; every actor is safe to run twice.
_MAX_STORE_RETRIES = 8


def _retry_when_store_unavailable(retries: int, exception: BaseException) -> bool:
    return isinstance(exception, StoreUnavailable) and retries < _MAX_STORE_RETRIES


_RETRIES: dict[str, Any] = {
    "retry_when": _retry_when_store_unavailable,
    "min_backoff": 250,
    "max_backoff": 15_000,
    "throws": (BadMessage,),
}


def _expect(value: object, kind: type, name: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadMessage(f"argument {name} must be {kind.__name__}, not {type(value).__name__}")


def _on_loop(work: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine on the process's event loop; this worker thread waits for it.

    Dramatiq's own bridge for async actors wakes every waiting thread ten times a second
    to look for interrupts; with hundreds of threads waiting on slow providers, that alone
    costs a share of the CPU. Here the thread sleeps until its coroutine is done (every
    provider call and Redis command has a timeout of its own).
    """
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        work.close()
        raise RuntimeError("no event loop: the worker's AsyncIO middleware did not boot")
    asyncio.run_coroutine_threadsafe(work, loop_thread.loop).result()


_START_FIELDS: dict[str, type] = {
    "phone": str,
    "policy": str,
    "channels": str,
    "code_length": int,
    "expires_at": int,
}


@dramatiq.actor(queue_name=keys.VERIFY_QUEUE, priority=10, **_RETRIES)
def advance(verification_id: str, attempt: int, cause: str, start: dict[str, Any] | None = None) -> None:
    """Make the next attempt of a verification (start, fallback or timeout)."""
    _expect(verification_id, str, "verification_id")
    _expect(attempt, int, "attempt")
    _expect(cause, str, "cause")
    if start is not None:
        _expect(start, dict, "start")
        for name, kind in _START_FIELDS.items():
            _expect(start.get(name), kind, f"start.{name}")
    _on_loop(runtime.current().verifier.advance(verification_id, attempt, cause, start))


@dramatiq.actor(queue_name=keys.CHECK_QUEUE, priority=0, **_RETRIES)
def check_code(verification_id: str, code: str, reply_key: str) -> None:
    """Compare a typed code; the answer goes to the reply key the producer waits on."""
    _expect(verification_id, str, "verification_id")
    _expect(code, str, "code")
    _expect(reply_key, str, "reply_key")
    if not reply_key.startswith(keys.PREFIX + "reply:"):
        raise BadMessage("reply_key must be a key returned by flashcall_check")
    current = runtime.current()
    answered = current.checks.check(verification_id, code, reply_key)
    if isinstance(answered, AskProvider):
        _on_loop(current.verifier.check_with_provider(verification_id, code, reply_key, answered))
    elif answered is None:
        _on_loop(current.verifier.check(verification_id, code, reply_key))


@dramatiq.actor(queue_name=keys.VERIFY_QUEUE, priority=5, **_RETRIES)
def call_status(verification_id: str, attempt: int, provider: str, status: dict[str, Any]) -> None:
    """A provider's status for an attempt, posted to the callback receiver."""
    _expect(verification_id, str, "verification_id")
    _expect(attempt, int, "attempt")
    _expect(provider, str, "provider")
    _expect(status, dict, "status")
    try:
        parsed = CallStatus(
            ref=str(status["ref"]),
            state=CallState(status["state"]),
            provider_state=str(status["provider_state"]),
            price=Decimal(status["price"]) if status.get("price") is not None else None,
        )
    except (KeyError, ValueError, ArithmeticError) as error:
        raise BadMessage(f"argument status is not a call status: {error!r}") from None
    _on_loop(runtime.current().verifier.on_status(verification_id, attempt, provider, parsed))


@dramatiq.actor(queue_name=keys.VERIFY_QUEUE, priority=5, **_RETRIES)
def poll(verification_id: str, attempt: int) -> None:
    """Ask a provider where an attempt's call stands (providers that post no callbacks)."""
    _expect(verification_id, str, "verification_id")
    _expect(attempt, int, "attempt")
    _on_loop(runtime.current().verifier.poll(verification_id, attempt))


@dramatiq.actor(queue_name=keys.VERIFY_QUEUE, priority=10, **_RETRIES)
def start(request: dict[str, Any]) -> None:
    """A start request enqueued directly instead of through FCALL flashcall_start."""
    _expect(request, dict, "request")
    try:
        _on_loop(
            runtime.current().store.start(json.dumps(request, ensure_ascii=False, separators=(",", ":")))
        )
    except redis.ResponseError as error:
        raise BadMessage(f"start request refused: {error}") from None
