"""`flashcall callbacks`: the small HTTP service providers post call and SMS statuses to.

Providers do not sign their callbacks, so each attempt's callback URL carries a token of
its own, unguessable (192 random bits) and issued when the attempt is claimed:
`/callbacks/<provider>/<token>`. A post is answered only after it is checked and durably
queued for the workers, so an accepted callback is never lost; everything else changes
nothing and gets a clear status:

- 404: no such token, or a token issued for another provider;
- 400: not the provider's callback (not JSON, or not the documented shape);
- 413: a body over 64 KiB;
- 503: Redis is unreachable (providers retry, or the attempt's timers move it on).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import asdict

from aiohttp import web

from worker.errors import StoreUnavailable
from worker.logging import get_logger
from worker.providers import PROVIDER_TYPES
from worker.store import Store

__all__ = ["create_app", "serve"]

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
_STORE = web.AppKey("store", Store)


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"ok": False, "error": reason}, status=status)


async def _receive(request: web.Request) -> web.Response:
    provider, token = request.match_info["provider"], request.match_info["token"]
    store = request.app[_STORE]
    try:
        body = await request.read()
        target = await store.callback_target(token)
        if target is None or target.provider != provider:
            log.warning("callback refused: unknown token", provider=provider)
            return _refuse(404, "unknown callback")
        kind = PROVIDER_TYPES.get(target.type)
        if kind is None:
            return _refuse(404, "unknown callback")
        try:
            status = kind.parse_callback(json.loads(body))
        except (ValueError, UnicodeDecodeError) as error:
            log.warning(
                "callback refused: malformed", provider=provider, verification_id=target.id, error=str(error)
            )
            return _refuse(400, f"not a {target.type} callback: {error}")
        accepted = await store.accept_callback(
            token,
            {**asdict(status), "price": str(status.price) if status.price is not None else None},
            now_ms=int(time.time() * 1000),
        )
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
    return web.json_response({"ok": True})


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(store: Store) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[_STORE] = store
    app.router.add_post("/callbacks/{provider}/{token}", _receive)
    app.router.add_get("/health", _health)
    return app


async def _serve(host: str, port: int, redis_url: str) -> None:
    store = Store.connect(redis_url, pool_size=32)
    runner = web.AppRunner(create_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("callback receiver listening", url=f"http://{host}:{port}/callbacks/")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await store.aclose()


def serve(host: str, port: int, *, redis_url: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    asyncio.run(_serve(host, port, redis_url))
