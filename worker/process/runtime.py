"""What one worker process holds: its Redis clients, routing, and background loops.

Built inside the process's event loop at worker boot (never at import, never before
the fork), torn down at shutdown. The loops: deadlines (worker/process/timers.py), the routing
file (reloaded when it changes), the routing state snapshot (once a second), and
provider balances (one process each minute for the whole cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import redis

from worker.core import keys
from worker.core.errors import FlashcallError, StoreUnavailable
from worker.logs.structured import get_logger
from worker.process.health import Heartbeat, health_dir
from worker.process.metrics import Metrics
from worker.process.settings import Settings
from worker.process.timers import run_timers
from worker.providers.base import Provider, TransportFailure
from worker.redis.connections import sync_client
from worker.redis.store import PublishedConfig, Store
from worker.routing.refresh import refresh_state
from worker.routing.reload import Routing, RoutingHolder
from worker.routing.state import RoutingState
from worker.verification.checks import CodeChecks
from worker.verification.events import LogObserver, Observers
from worker.verification.verifier import Verifier

__all__ = ["Runtime", "current"]

log = get_logger(__name__)

#: A retired provider is closed this long after a reload, when its calls are over.
RETIRE_AFTER = 60.0

_current: Runtime | None = None


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        holder: RoutingHolder,
        metrics: Metrics,
        client: redis.Redis,
    ) -> None:
        self.settings = settings
        self.store = store
        self.checks = CodeChecks(
            client, settings.code_secret, previous_secrets=settings.previous_code_secrets
        )
        self.holder = holder
        self.metrics = metrics
        self.state = RoutingState()
        self.verifier = Verifier(
            store=store,
            routing=lambda: self.holder.current,
            state=lambda: self.state,
            code_secret=settings.code_secret,
            previous_code_secrets=settings.previous_code_secrets,
            callback_base_url=settings.callback_base_url,
            observer=Observers([LogObserver(), metrics]),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.heartbeat: Heartbeat | None = None

    @property
    def routing(self) -> Routing:
        return self.holder.current

    @classmethod
    async def start(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Runtime:
        global _current
        env = os.environ if environ is None else environ
        # For what worker threads do themselves: breakers (pybreaker is synchronous) and checks.
        client = sync_client(settings.redis_url, decode_responses=True, socket_timeout=10)
        # Reading the file and building breakers does blocking I/O: never on the event loop.
        holder = await asyncio.to_thread(RoutingHolder, settings.routing_path, env, client)
        store = Store.connect(
            settings.redis_url, pool_size=settings.redis_pool_size, replica_wait_ms=settings.replica_wait_ms
        )
        runtime = cls(settings=settings, store=store, holder=holder, metrics=Metrics(), client=client)
        # Refused by the ACL stops the process here, saying what to allow, before any claim.
        await store.replicas.mode()
        await runtime._publish()
        await runtime._refresh_state()
        # `flashcall health`: touched from this loop, so that a wedged loop stops it.
        runtime.heartbeat = Heartbeat(health_dir(env))
        runtime._tasks = [
            asyncio.create_task(runtime.heartbeat.run()),
            asyncio.create_task(run_timers(store, interval=settings.timer_interval)),
            asyncio.create_task(_every(settings.reload_interval, runtime._reload)),
            asyncio.create_task(_every(settings.state_interval, runtime._refresh_state)),
            asyncio.create_task(_every(settings.balance_interval, runtime._poll_balances)),
        ]
        _current = runtime
        config = runtime.routing.config
        log.info(
            "worker process ready",
            providers=sorted(runtime.routing.providers),
            policies=sorted(config.policies),
        )
        return runtime

    async def _publish(self) -> None:
        config = self.routing.config
        await self.store.publish_config(
            PublishedConfig(
                policies=tuple(sorted(config.policies)),
                per_phone=tuple((rule.limit, int(rule.per * 1000)) for rule in config.limits.per_phone),
            )
        )

    async def _reload(self) -> None:
        retired = await asyncio.to_thread(self.holder.reload_if_changed)
        if retired is None:
            return
        await self._publish()
        for provider in retired:
            self._tasks.append(asyncio.create_task(_close_later(provider)))

    async def _refresh_state(self) -> None:
        config = self.routing.config
        self.state = await refresh_state(self.store, config, now_ms=int(time.time() * 1000))
        self.metrics.observe_state(self.state, config.providers)
        self.metrics.count(await self.store.drain_metrics())
        stats = await self.store.queue_stats(now_ms=int(time.time() * 1000))
        self.metrics.observe_queues(stats["queued"], stats["dead"], stats["timers"], stats.get("backlog", {}))

    async def _poll_balances(self) -> None:
        for name, provider in self.routing.providers.items():
            # Held a little less than the interval, so that the next round's holder can take it.
            lease_ms = int(self.settings.balance_interval * 900)
            if not await self.store.try_lease(keys.balance_poll(name), ttl_ms=lease_ms):
                continue
            try:
                balance = await provider.balance()
            except TransportFailure as failure:
                log.warning("balance unknown", provider=name, error_code=failure.error_code)
                continue
            if balance is not None:
                await self.store.provider_balance(name, balance=balance, now_ms=int(time.time() * 1000))
                self.metrics.observe_balance(name, balance)

    async def stop(self) -> None:
        global _current
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for provider in self.routing.providers.values():
            await provider.aclose()
        await self.store.aclose()
        if self.heartbeat is not None:
            self.heartbeat.remove()
        _current = None


async def _every(interval: float, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` every `interval` seconds until cancelled; a Redis outage only skips a turn."""
    while True:
        await asyncio.sleep(interval)
        try:
            await work()
        except StoreUnavailable as error:
            log.warning("background work skipped: Redis is unreachable", work=work.__name__, error=str(error))


async def _close_later(provider: Provider) -> None:
    """Close a provider a reload retired, once the calls it had in flight are over."""
    await asyncio.sleep(RETIRE_AFTER)
    await provider.aclose()


def current() -> Runtime:
    if _current is None:
        raise FlashcallError("the worker runtime is not started: run actors under `flashcall worker`")
    return _current
