"""What one worker process holds: its Redis clients, routing, and background loops.

Built inside the process's event loop at worker boot (never at import, never before
the fork), torn down at shutdown. The loops: deadlines (worker/process/timers.py), the routing
file (reloaded when it changes), provider balances (one process each minute for the whole
cluster) and, in a process that routes (one that consumes the verifications queue), the
routing state snapshot; in its `flashcall worker`'s reporter (worker/process/middleware/roles.py),
the library's counts and the queue gauges.

The snapshot is read every `state_interval` (1 s) while the process routes, and only every
IDLE_STATE_INTERVAL while it does not, for the gauges drawn from it; the first routing
decision after a quiet spell reads it first. Check processes never read it: they decide
no routing. Each read costs a few commands per provider (flashcall_routing_state keeps
running sums of health), so an idle process costs Redis a few commands a second in all:
its timer passes, its consumers' waits and, rarely, these reads.
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
from worker.process.middleware import roles
from worker.process.settings import Settings
from worker.process.timers import run_timers
from worker.providers.base import Provider, TransportFailure
from worker.redis.connections import sync_client
from worker.redis.store import Store
from worker.routing.published import published
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
#: Seconds between reads of the routing state while the process does not route: the gauges
#: drawn from it (breakers, money, learned conversion) stay as fresh as a scrape needs.
IDLE_STATE_INTERVAL = 15.0
#: Seconds between the reporter's drains of the library's counts and reads of the queues:
#: what the metrics scrape (every 15 s) and KEDA, which scales on flashcall_backlog, need.
REPORT_INTERVAL = 5.0

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
        routes: bool = True,
        reports: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.routes = routes
        """Whether this process makes attempts (consumes the verifications queue)."""
        self.reports = reports
        """Whether this process drains the library's counts and reads the queue gauges."""
        self.store = store
        self.checks = CodeChecks(
            client, settings.code_secret, previous_secrets=settings.previous_code_secrets
        )
        self.holder = holder
        self.metrics = metrics
        self.state = RoutingState()
        self._monotonic = monotonic
        self._state_read_at: float | None = None
        """When (on `monotonic`) the snapshot in `state` was read; None before the first read."""
        self._state_wanted = False
        self._state_read: asyncio.Task[None] | None = None
        self.verifier = Verifier(
            store=store,
            routing=lambda: self.holder.current,
            state=lambda: self.state,
            fresh_state=self.fresh_state,
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
    async def start(
        cls, settings: Settings, environ: Mapping[str, str] | None = None, *, routes: bool = True
    ) -> Runtime:
        """`routes`: whether this process consumes the verifications queue."""
        global _current
        env = os.environ if environ is None else environ
        # For what worker threads do themselves: breakers (pybreaker is synchronous) and checks.
        client = sync_client(settings.redis_url, decode_responses=True, socket_timeout=10)
        # Reading the file and building breakers does blocking I/O: never on the event loop.
        holder = await asyncio.to_thread(RoutingHolder, settings.routing_path, env, client)
        store = Store.connect(
            settings.redis_url, pool_size=settings.redis_pool_size, replica_wait_ms=settings.replica_wait_ms
        )
        runtime = cls(
            settings=settings,
            store=store,
            holder=holder,
            metrics=Metrics(),
            client=client,
            routes=routes,
            reports=roles.claim_reporter(env),
        )
        try:
            runtime._prepare_providers()
            # Refused by the ACL stops the process here, saying what to allow, before any claim.
            await store.replicas.mode()
            await runtime._publish()
            if runtime.routes:
                await runtime._read_state()
            if runtime.reports:
                await runtime._report()
        except BaseException:
            # A boot that Redis went away from is tried again (worker/process/middleware/boot.py):
            # the providers' clients and the store's pool of each attempt must not pile up.
            with contextlib.suppress(Exception):
                await runtime.stop()
            raise
        # `flashcall health`: touched from this loop, so that a wedged loop stops it.
        runtime.heartbeat = Heartbeat(health_dir(env))
        runtime._tasks = [
            asyncio.create_task(runtime.heartbeat.run()),
            asyncio.create_task(run_timers(store, interval=settings.timer_interval)),
            asyncio.create_task(_every(settings.reload_interval, runtime._reload)),
            asyncio.create_task(_every(settings.balance_interval, runtime._poll_balances)),
        ]
        if runtime.routes:
            runtime._tasks.append(asyncio.create_task(_every(settings.state_interval, runtime._keep_state)))
        if runtime.reports:
            runtime._tasks.append(asyncio.create_task(_every(REPORT_INTERVAL, runtime._report)))
        _current = runtime
        config = runtime.routing.config
        log.info(
            "worker process ready",
            providers=sorted(runtime.routing.providers),
            policies=sorted(config.policies),
            routes=runtime.routes,
            reports=runtime.reports,
        )
        return runtime

    async def _publish(self) -> None:
        await self.store.publish_config(published(self.routing.config))

    def _prepare_providers(self) -> None:
        for provider in self.routing.providers.values():
            provider.prepare()

    async def _reload(self) -> None:
        retired = await asyncio.to_thread(self.holder.reload_if_changed)
        if retired is None:
            return
        self._prepare_providers()
        await self._publish()
        for provider in retired:
            self._tasks.append(asyncio.create_task(_close_later(provider)))

    async def fresh_state(self) -> None:
        """Before a routing decision: read the routing state first when the last read is older
        than two state intervals (the process did not route meanwhile, so nothing kept it
        fresh); on a failed read, the decision is made on the last one (each claim is decided
        in Redis anyway)."""
        self._state_wanted = True
        read_at = self._state_read_at
        if read_at is not None and self._monotonic() - read_at <= 2 * self.settings.state_interval:
            return
        try:
            await self._read_state()
        except (StoreUnavailable, redis.RedisError) as error:
            log.warning("routing on the last routing state: it could not be read", error=str(error))

    async def _keep_state(self) -> None:
        """Each state interval: read the routing state again if the process routed since the
        last read, or if the last is IDLE_STATE_INTERVAL old."""
        wanted, self._state_wanted = self._state_wanted, False
        read_at = self._state_read_at
        age = None if read_at is None else self._monotonic() - read_at
        if age is None or age >= IDLE_STATE_INTERVAL or (wanted and age >= self.settings.state_interval):
            await self._read_state()

    async def _read_state(self) -> None:
        """One read at a time: callers that come while one runs wait for it."""
        if self._state_read is None or self._state_read.done():
            self._state_read = asyncio.create_task(self._refresh_state())
        await asyncio.shield(self._state_read)

    async def _refresh_state(self) -> None:
        config = self.routing.config
        began = self._monotonic()
        self.state = await refresh_state(self.store, config, now_ms=int(time.time() * 1000))
        self._state_read_at = began
        self.metrics.observe_state(self.state, config.providers)

    async def _report(self) -> None:
        """The library's counts into this process's counters; the queues into its gauges;
        the conversion guard's holds and releases into the log, once each cluster-wide."""
        # Without a guard nothing is held (a hold kept from an earlier routing.yaml is
        # released by the next start of its range, or by `flashcall fraud list`).
        changes = (
            await self.store.fraud_report(now_ms=int(time.time() * 1000))
            if self.routing.config.fraud.guard
            else []
        )
        for change in changes:
            if change.kind == "held":
                log.warning(
                    "number range held as suspected traffic pumping",
                    range=change.range,
                    until_ms=change.until_ms,
                    level=change.level,
                )
            else:
                log.info("number range released", range=change.range, reason=change.reason)
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
