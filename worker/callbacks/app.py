"""`flashcall callbacks`: the small HTTP service providers post call and SMS statuses to.

An ASGI application (Starlette), served by uvicorn. Providers do not sign their
callbacks, so each attempt's callback URL carries a token of its own, unguessable (192
random bits) and issued when the attempt is claimed: `/callbacks/<provider>/<token>`.
A post is answered 2xx only after it is checked and durably kept for the workers, so an
accepted callback is never lost; everything else changes nothing and gets a clear
status:

- 200: queued for the workers; or a repeat of a state already taken in (`"repeat": true`),
  which queues nothing;
- 202: the attempt's delivery is not recorded yet, so its call id is not known: the status
  is kept and acted on when the delivery is recorded, if its call id is the attempt's;
- 404: no such token, or a token issued for another provider;
- 400: not the provider's callback (not JSON, or not the documented shape);
- 409: the call id is not the attempt's call;
- 410: the attempt already has an outcome (a final state, a failure, a timeout), or its
  verification ended: the token takes nothing new;
- 413: a body over 64 KiB;
- 503: Redis is unreachable, or too many statuses wait for the delivery (the provider may
  retry; the attempt's timers move the verification on regardless).

Connections are bounded (`ReceiverLimits`): headers and body must arrive within their
deadlines (worker/callbacks/protocol.py), an idle kept-alive connection is closed, and past
`max_connections` requests are answered 503.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from worker.callbacks.protocol import DeadlineH11Protocol
from worker.core.errors import StoreUnavailable, UsageError
from worker.core.verification import CallState
from worker.logs.structured import get_logger
from worker.process.heap import freeze_long_lived
from worker.providers.registry import PROVIDER_TYPES
from worker.redis.store import CallbackAnswer, Store

__all__ = ["MAX_BODY_BYTES", "ReceiverLimits", "create_app", "serve"]

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReceiverLimits:
    """How long, and how many, connections the receiver holds (docs/operations.md)."""

    header_timeout: int = 5
    """Seconds from a connection (or a kept-alive connection's next bytes) to its request's
    complete headers."""
    body_timeout: int = 5
    """Seconds from a request's headers to its complete body."""
    idle_timeout: int = 5
    """Seconds a kept-alive connection may wait for its next request."""
    max_connections: int = 1000
    """Open connections (or requests in progress) at which a request is answered 503."""

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if value < 1:
                raise UsageError(f"--{limit.name.replace('_', '-')} must be 1 or more, not {value}")


class _TooLarge(Exception):
    pass


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": reason}, status_code=status)


async def _body(request: Request) -> bytes:
    """The body, read no further than the limit: a flood is cut off, not buffered."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


#: How each refusal of flashcall_callback_accept is told to the provider.
_REFUSALS: dict[CallbackAnswer, tuple[int, str]] = {
    "mismatch": (409, "the call id is not this attempt's call"),
    "closed": (410, "this attempt already has an outcome"),
    "busy": (503, "try again later"),
    "unknown": (404, "unknown callback"),
}


async def _receive(request: Request) -> JSONResponse:
    provider, token = request.path_params["provider"], request.path_params["token"]
    store: Store = request.app.state.store
    try:
        body = await _body(request)
    except _TooLarge:
        return _refuse(413, f"a callback is at most {MAX_BODY_BYTES} bytes")
    except ClientDisconnect:
        # Closed at its body deadline (or by the client): nobody reads this answer.
        return _refuse(400, "the request was not completed")
    try:
        target = await store.callback_target(token)
        if target is None or target.provider != provider or target.type not in PROVIDER_TYPES:
            log.warning("callback refused: unknown token", provider=provider)
            return _refuse(404, "unknown callback")
        try:
            status = PROVIDER_TYPES[target.type].parse_callback(json.loads(body))
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            # RecursionError: JSON nested deeper than the decoder goes (`[[[[...`).
            log.warning(
                "callback refused: malformed", provider=provider, verification_id=target.id, error=str(error)
            )
            return _refuse(400, f"not a {target.type} callback: {error}")
        message: dict[str, Any] = {
            **asdict(status),
            "price": None if status.price is None else str(status.price),
        }
        answer = await store.accept_callback(
            token,
            message,
            ref=status.ref,
            state=status.provider_state,
            final=status.state is not CallState.IN_PROGRESS,
            now_ms=int(time.time() * 1000),
        )
    except StoreUnavailable:
        return _refuse(503, "try again later")
    context = {"provider": provider, "verification_id": target.id, "attempt": target.attempt}
    if answer in ("accepted", "repeat"):
        log.info("callback accepted", **context, state=status.provider_state, repeat=answer == "repeat")
        return JSONResponse({"ok": True, "repeat": True} if answer == "repeat" else {"ok": True})
    if answer == "held":
        log.info("callback held for the delivery", **context, state=status.provider_state)
        return JSONResponse({"ok": True, "held": True}, status_code=202)
    code, reason = _REFUSALS[answer]
    log.warning("callback refused", **context, state=status.provider_state, reason=answer)
    return _refuse(code, reason)


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app(store: Store) -> Starlette:
    """The receiver on this store; the store is closed when the application shuts down."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.store = store
        yield
        await store.aclose()

    return Starlette(
        routes=[
            Route("/callbacks/{provider}/{token}", _receive, methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(host: str, port: int, *, redis_url: str, limits: ReceiverLimits | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    limits = limits or ReceiverLimits()
    app = create_app(Store.connect(redis_url, pool_size=32))
    log.info("callback receiver listening", url=f"http://{host}:{port}/callbacks/", **asdict(limits))
    run_limited(app, host, port, limits)


def run_limited(app: Starlette, host: str, port: int, limits: ReceiverLimits) -> None:
    """Serve `app` with uvicorn under `limits` until SIGINT or SIGTERM: the receiver's and the
    HTTP API's one way of holding off slow and hostile clients."""
    freeze_long_lived()
    # uvicorn's own logging stays out: records go through the router's structlog setup.
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=DeadlineH11Protocol.with_deadlines(
            header_timeout=limits.header_timeout, body_timeout=limits.body_timeout
        ),
        ws="none",
        timeout_keep_alive=limits.idle_timeout,
        limit_concurrency=limits.max_connections,
        access_log=False,
        log_config=None,
        server_header=False,
    )
