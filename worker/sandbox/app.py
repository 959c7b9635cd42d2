"""Building and serving the sandbox: every provider under its own prefix, the control API beside them."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from worker.sandbox import control, voicepassword
from worker.sandbox.runtime import SANDBOX, ProviderSpec, Sandbox
from worker.sandbox.state import SandboxState

__all__ = ["PROVIDERS", "create_app", "serve"]

PROVIDERS: tuple[ProviderSpec, ...] = (voicepassword.PROVIDER,)
CONTROL_PREFIX = "/_sandbox"
# Hanging requests end on shutdown; this bounds the wait for any other request in flight.
SHUTDOWN_TIMEOUT_S = 2.0


def create_app(*, latency_ms: int = 0) -> web.Application:
    """The sandbox as an aiohttp application; `latency_ms` delays every provider answer."""
    state = SandboxState(
        default_balances={spec.name: spec.default_balance for spec in PROVIDERS},
        latency_ms=latency_ms,
    )
    sandbox = Sandbox(state=state, providers={spec.name: spec for spec in PROVIDERS})
    app = web.Application()
    app[SANDBOX] = sandbox

    async def callbacks(_: web.Application) -> AsyncIterator[None]:
        await sandbox.callbacks.start()
        yield
        await sandbox.callbacks.close()

    async def release_hanging(_: web.Application) -> None:
        sandbox.closing.set()

    app.cleanup_ctx.append(callbacks)
    app.on_shutdown.append(release_hanging)
    app.add_subapp(CONTROL_PREFIX, control.build_app())
    for spec in PROVIDERS:
        app.add_subapp(f"/{spec.name}", spec.build_app())
    return app


async def _serve(host: str, port: int, latency_ms: int) -> None:
    # No access log: formatting a line per request costs too much at benchmark rates.
    runner = web.AppRunner(
        create_app(latency_ms=latency_ms), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"sandbox listening on {site.name}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(host: str, port: int, *, latency_ms: int = 0) -> None:
    """Serve the sandbox until SIGINT or SIGTERM."""
    asyncio.run(_serve(host, port, latency_ms))
