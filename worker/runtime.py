"""What one worker process holds: its Redis client, providers, routing and timer loop.

Built inside the process's event loop at worker boot (never at import, never before
the fork), torn down at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping

from worker.errors import FlashcallError
from worker.logging import get_logger
from worker.providers import build_provider
from worker.routing import load_routing
from worker.settings import Settings
from worker.store import Store
from worker.timers import run_timers
from worker.verifier import Routing, Verifier

__all__ = ["Runtime", "current"]

log = get_logger(__name__)

_current: Runtime | None = None


class Runtime:
    def __init__(self, *, settings: Settings, store: Store, routing: Routing) -> None:
        self.settings = settings
        self.store = store
        self.routing = routing
        self.verifier = Verifier(store=store, routing=lambda: self.routing, code_secret=settings.code_secret)
        self._timers: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Runtime:
        global _current
        env = os.environ if environ is None else environ
        config = load_routing(settings.routing_path, env)
        providers = {
            name: build_provider(name, entry, env)
            for name, entry in config.providers.items()
            if entry.enabled
        }
        store = Store.connect(settings.redis_url, pool_size=settings.redis_pool_size)
        runtime = cls(settings=settings, store=store, routing=Routing(config=config, providers=providers))
        await store.publish_policies(sorted(config.policies))
        runtime._timers = asyncio.create_task(run_timers(store, interval=settings.timer_interval))
        _current = runtime
        log.info("worker process ready", providers=sorted(providers), policies=sorted(config.policies))
        return runtime

    async def stop(self) -> None:
        global _current
        if self._timers is not None:
            self._timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timers
        for provider in self.routing.providers.values():
            await provider.aclose()
        await self.store.aclose()
        _current = None


def current() -> Runtime:
    if _current is None:
        raise FlashcallError("the worker runtime is not started: run actors under `flashcall worker`")
    return _current
