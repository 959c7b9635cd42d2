"""`flashcall callbacks`: the small HTTP service providers post call and SMS statuses to.

An ASGI application (Starlette), served by uvicorn. Providers do not sign their
callbacks, so each attempt's callback URL carries a token of its own, unguessable (192
random bits) and issued when the attempt is claimed: `/callbacks/<provider>/<token>`.
A post is answered 200 only after it is checked and durably queued for the workers, so
an accepted callback is never lost; everything else changes nothing and gets a clear
status:

- 404: no such token, or a token issued for another provider;
- 400: not the provider's callback (not JSON, or not the documented shape);
- 413: a body over 64 KiB;
- 503: Redis is unreachable (the provider may retry; the attempt's timers move the
  verification on regardless).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from worker.errors import StoreUnavailable
from worker.logging import get_logger
from worker.providers import PROVIDER_TYPES
from worker.store import Store

__all__ = ["MAX_BODY_BYTES", "create_app", "serve"]

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024


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


async def _receive(request: Request) -> JSONResponse:
    provider, token = request.path_params["provider"], request.path_params["token"]
    store: Store = request.app.state.store
    try:
        body = await _body(request)
    except _TooLarge:
        return _refuse(413, f"a callback is at most {MAX_BODY_BYTES} bytes")
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
        accepted = await store.accept_callback(token, message, now_ms=int(time.time() * 1000))
    except StoreUnavailable:
        return _refuse(503, "try again later")
    if not accepted:
        return _refuse(404, "unknown callback")
    log.info(
        "callback accepted",
        provider=provider,
        verification_id=target.id,
        attempt=target.attempt,
        state=status.provider_state,
    )
    return JSONResponse({"ok": True})


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


def serve(host: str, port: int, *, redis_url: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = create_app(Store.connect(redis_url, pool_size=32))
    log.info("callback receiver listening", url=f"http://{host}:{port}/callbacks/")
    # uvicorn's own logging stays out: records go through the router's structlog setup.
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None, server_header=False)
