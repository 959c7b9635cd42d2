"""Building and serving the sandbox: the control API on one port, each provider on its own.

Each provider is served at exactly its documented paths (`/api/voice-password/send/`,
Telphin's `/` and `/auth/`, ...), so an adapter pointed at it differs from production only
in its base URL. All of them share one state: records, scripts, balances and inboxes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from flashcall_dev.sandbox import control, gateway, mobilgroup, telphin, voicepassword
from flashcall_dev.sandbox.shared import SANDBOX, ProviderSpec, Sandbox
from flashcall_dev.sandbox.state import SandboxState

__all__ = ["DEFAULT_PORT", "PROVIDERS", "RunningSandbox", "default_provider_ports", "serve", "start"]

PROVIDERS: tuple[ProviderSpec, ...] = (
    voicepassword.PROVIDER,
    gateway.PROVIDER,
    telphin.PROVIDER,
    mobilgroup.PROVIDER,
)
#: `flashcall sandbox`'s control port; the providers follow it (default_provider_ports).
DEFAULT_PORT = 8600
CONTROL_PREFIX = "/_sandbox"
# Hanging requests end on shutdown; this bounds the wait for any other request in flight.
SHUTDOWN_TIMEOUT_S = 2.0


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    control_url: str
    provider_urls: Mapping[str, str]
    _runners: list[web.AppRunner]

    async def stop(self) -> None:
        # Hanging requests are let go first, so that the runners can finish.
        self.sandbox.closing.set()
        for runner in self._runners:
            await runner.cleanup()
        await self.sandbox.callbacks.close()


async def _site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    # No access log: formatting a line per request costs too much at benchmark rates.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


async def start(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    provider_ports: Mapping[str, int] | None = None,
    latency_ms: int = 0,
) -> RunningSandbox:
    """Serve the control API on `port` and each provider on its port from `provider_ports`
    (0, or absent, picks a free one). `latency_ms` delays every provider answer."""
    state = SandboxState(
        default_balances={spec.name: spec.default_balance for spec in PROVIDERS},
        latency_ms=latency_ms,
    )
    sandbox = Sandbox(state=state, providers={spec.name: spec for spec in PROVIDERS})
    await sandbox.callbacks.start()
    runners: list[web.AppRunner] = []
    provider_urls: dict[str, str] = {}
    for spec in PROVIDERS:
        app = spec.build_app()
        app[SANDBOX] = sandbox
        runner, url = await _site(app, host, (provider_ports or {}).get(spec.name, 0))
        runners.append(runner)
        provider_urls[spec.name] = url
    sandbox.provider_urls = provider_urls
    control_app = web.Application()
    control_app[SANDBOX] = sandbox
    control_app.add_subapp(CONTROL_PREFIX, control.build_app())
    runner, control_url = await _site(control_app, host, port)
    runners.append(runner)
    return RunningSandbox(
        sandbox=sandbox, control_url=control_url, provider_urls=provider_urls, _runners=runners
    )


async def _serve(host: str, port: int, provider_ports: Mapping[str, int], latency_ms: int) -> None:
    running = await start(host, port, provider_ports=provider_ports, latency_ms=latency_ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"sandbox control API on {running.control_url}/_sandbox/", flush=True)
        for name, url in running.provider_urls.items():
            print(f"sandbox {name} on {url}", flush=True)
        await stop.wait()
    finally:
        await running.stop()


def default_provider_ports(port: int = DEFAULT_PORT) -> dict[str, int]:
    """Where `flashcall sandbox --port PORT` serves each provider: port+1, port+2, ... in the
    order of PROVIDERS (voicepassword, gateway, telphin, mobilgroup). The compose stack's
    provider URLs are these (tests/unit/test_sandbox_ports.py holds them to it)."""
    return {spec.name: port + 1 + index for index, spec in enumerate(PROVIDERS)}


def serve(
    host: str, port: int, *, provider_ports: Mapping[str, int] | None = None, latency_ms: int = 0
) -> None:
    """Serve the sandbox until SIGINT or SIGTERM. Providers without a port in `provider_ports`
    get their default_provider_ports(port) (free ports when `port` is 0)."""
    ports = default_provider_ports(port) if port else {}
    ports.update(provider_ports or {})
    asyncio.run(_serve(host, port, ports, latency_ms))
