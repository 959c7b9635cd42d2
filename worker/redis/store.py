"""The verification store: reads of `flashcall:v:<id>` and the library's atomic transitions.

Every change of a verification goes through one function of worker/redis/flashcall.lua,
called through its wrapper in worker/redis/functions.py; this module runs those calls on
the worker's asyncio client. redis-py retries commands after connection errors, so each
function is safe to run twice (they compare-and-set on the attempt number, and a delivery
is settled once). A claim also waits for a replica while the primary has one
(worker/redis/replication.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast

import redis
import redis.asyncio

from worker.core import keys
from worker.core.errors import StoreUnavailable
from worker.core.verification import Verification
from worker.redis import functions
from worker.redis.connections import async_client
from worker.redis.functions import (
    AdmissionGuard,
    Call,
    CallbackAnswer,
    CallbackTarget,
    Claim,
    PublishedConfig,
    TimerPass,
)
from worker.redis.library import install_async
from worker.redis.replication import DEFAULT_WAIT_MS, ReplicaWatch

__all__ = [
    "AdmissionGuard",
    "CallbackAnswer",
    "CallbackTarget",
    "Claim",
    "PublishedConfig",
    "Store",
    "TimerPass",
]

T = TypeVar("T")


class Store:
    def __init__(self, client: redis.asyncio.Redis, *, replica_wait_ms: int = DEFAULT_WAIT_MS) -> None:
        self._client = client
        self._published: PublishedConfig | None = None
        self.replicas = ReplicaWatch(client, wait_ms=replica_wait_ms)

    @classmethod
    def connect(cls, url: str, *, pool_size: int, replica_wait_ms: int = DEFAULT_WAIT_MS) -> Store:
        # A blocking pool (one server's or Sentinel's primary, as REDIS_URL says): hundreds of
        # coroutines wait their turn for a connection instead of failing with "Too many
        # connections". Commands time out too: a worker thread waits for its coroutine
        # without a limit.
        return cls(
            async_client(url, pool_size=pool_size, timeout=10, socket_timeout=10, decode_responses=True),
            replica_wait_ms=replica_wait_ms,
        )

    @property
    def client(self) -> redis.asyncio.Redis:
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, call: Call[T]) -> T:
        answer, _ = await self._call_then_wait(call, wait=False)
        return answer

    async def _call_then_wait(self, call: Call[T], *, wait: bool) -> tuple[T, int]:
        """The call, and with `wait` a WAIT for one replica on the same connection (WAIT counts
        the writes of its own connection): the answer, and how many replicas acknowledged."""
        try:
            try:
                return await self._send(call, wait=wait)
            except redis.ResponseError as error:
                if isinstance(error, redis.exceptions.OutOfMemoryError):
                    # At maxmemory Redis refuses the whole call before it runs: nothing was
                    # half-written, and the same call succeeds once memory is freed.
                    raise StoreUnavailable(
                        f"Redis is out of memory ({error}); the message will be retried"
                    ) from error
                # A Redis restarted without persistence comes back without the library.
                if "function not found" not in str(error).lower():
                    raise
                try:
                    await self._reinstall()
                except redis.exceptions.NoPermissionError as refused:
                    # The callback receiver's user may not load code: it waits for a worker.
                    raise StoreUnavailable(
                        "the flashcall library is not loaded and this Redis user may not load it: "
                        "a worker reinstalls it, or run `flashcall redis install` as an admin"
                    ) from refused
                return await self._send(call, wait=wait)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error

    async def _send(self, call: Call[T], *, wait: bool) -> tuple[T, int]:
        if not wait:
            return await call.run_async(self._client), 0
        async with self._client.pipeline(transaction=False) as pipe:
            call.queue(pipe)
            pipe.wait(1, self.replicas.wait_ms)
            answer, acknowledged = await pipe.execute()
        return call.parse(answer), int(acknowledged)

    async def _reinstall(self) -> None:
        await install_async(self._client)
        if self._published is not None:
            await functions.publish_config(self._published).run_async(self._client)

    async def start(self, request_json: str) -> dict[str, Any]:
        """flashcall_start, for start requests that arrive as queue messages."""
        return await self._call(functions.start(request_json))

    async def load(self, verification_id: str) -> Verification | None:
        try:
            fields = cast(dict[str, str], await self._client.hgetall(keys.verification(verification_id)))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        return Verification.from_hash(fields) if fields else None

    async def check_material(self, verification_id: str) -> functions.AskProvider:
        """Which provider keeps a verification's code, and its number, read back: for a
        library before version 13, whose flashcall_apply_check does not name them."""
        try:
            checker, phone = cast(
                list[str | None],
                await self._client.hmget(keys.verification(verification_id), ["provider_checks", "phone"]),
            )
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        return functions.AskProvider(checker or "", phone or "")

    async def begin_attempt(
        self,
        verification_id: str,
        *,
        expected_attempt: int,
        now_ms: int,
        step: int,
        channel: str,
        provider: str,
        code_hash: str,
        deadline_ms: int,
        guard: AdmissionGuard,
        callback_token: str = "",
        provider_type: str = "",
        operator: str = "",
        learn: str = "",
        lead: tuple[str, str, str] | None = None,
    ) -> Claim:
        """Claim the next attempt if the provider admits a call (functions.begin_attempt).

        While the primary has a replica, a claim counts only once a replica holds it: one that
        none acknowledged raises ClaimUnreplicated (a StoreUnavailable), and so does every claim
        while the watch holds them (worker/redis/replication.py)."""
        wait = await self.replicas.before_claim()
        claim, acknowledged = await self._call_then_wait(
            functions.begin_attempt(
                verification_id,
                expected_attempt=expected_attempt,
                now_ms=now_ms,
                step=step,
                channel=channel,
                provider=provider,
                code_hash=code_hash,
                deadline_ms=deadline_ms,
                guard=guard,
                callback_token=callback_token,
                provider_type=provider_type,
                operator=operator,
                learn=learn,
                lead=lead,
            ),
            wait=wait,
        )
        if wait and claim.result == "ok":
            if not acknowledged:
                raise await self.replicas.unacknowledged()
            self.replicas.acknowledged()
        return claim

    async def attempt_delivered(
        self,
        verification_id: str,
        *,
        attempt: int,
        now_ms: int,
        provider: str,
        channel: str,
        step: int,
        ref: str,
        price_e4: int,
        code_hash: str,
        provider_checks: bool,
        step_deadline_ms: int,
        latency_ms: int,
        day: str,
        poll_at_ms: int = 0,
    ) -> str:
        """Record a delivery (functions.attempt_delivered)."""
        return await self._call(
            functions.attempt_delivered(
                verification_id,
                attempt=attempt,
                now_ms=now_ms,
                provider=provider,
                channel=channel,
                step=step,
                ref=ref,
                price_e4=price_e4,
                code_hash=code_hash,
                provider_checks=provider_checks,
                step_deadline_ms=step_deadline_ms,
                latency_ms=latency_ms,
                day=day,
                poll_at_ms=poll_at_ms,
            )
        )

    async def attempt_failed(
        self,
        verification_id: str,
        *,
        attempt: int,
        now_ms: int,
        outcome: str,
        error_code: str,
        state: str,
        recovery_at_ms: int,
        discard_code: bool,
        provider_fault: bool = False,
        latency_ms: int = -1,
        no_money_ms: int = 0,
    ) -> str:
        """Settle the attempt as failed (functions.attempt_failed)."""
        return await self._call(
            functions.attempt_failed(
                verification_id,
                attempt=attempt,
                now_ms=now_ms,
                outcome=outcome,
                error_code=error_code,
                state=state,
                recovery_at_ms=recovery_at_ms,
                discard_code=discard_code,
                provider_fault=provider_fault,
                latency_ms=latency_ms,
                no_money_ms=no_money_ms,
            )
        )

    async def give_up(
        self, verification_id: str, *, attempt: int, now_ms: int, reason: str, hard: bool
    ) -> str:
        """'failed', 'waiting' (a code was delivered: wait for the user until expiry), or why not."""
        return await self._call(
            functions.give_up(verification_id, attempt=attempt, now_ms=now_ms, reason=reason, hard=hard)
        )

    async def apply_check(
        self, verification_id: str, *, proof: str, reply_key: str, now_ms: int
    ) -> str | functions.AskProvider:
        """Answer a check on its reply key (functions.apply_check)."""
        return await self._call(
            functions.apply_check(verification_id, proof=proof, reply_key=reply_key, now_ms=now_ms)
        )

    async def fire_timers(self, *, now_ms: int, limit: int) -> TimerPass:
        """Act on the timers due at `now_ms`: how many fired, and when the next falls due."""
        return await self._call(functions.fire_timers(now_ms=now_ms, limit=limit))

    async def publish_config(self, config: PublishedConfig) -> None:
        """Tell flashcall_start which policies exist and which per-number limits hold;
        published again whenever the library is reinstalled."""
        self._published = config
        await self._call(functions.publish_config(config))

    async def learning_state(self, providers: Sequence[str]) -> dict[str, Any]:
        """Learned conversion per provider and the leading choices (flashcall_learning_state)."""
        return await self._call(functions.learning_state(providers))

    async def routing_state(
        self, *, now_ms: int, window_ms: int, day: str, providers: Sequence[str]
    ) -> dict[str, Any]:
        """Breakers, money, spend and health of these providers, as one JSON document."""
        return await self._call(
            functions.routing_state(now_ms=now_ms, window_ms=window_ms, day=day, providers=providers)
        )

    async def provider_balance(self, provider: str, *, balance: Decimal, now_ms: int) -> None:
        await self._call(functions.provider_balance(provider, balance=balance, now_ms=now_ms))

    async def callback_target(self, token: str) -> CallbackTarget | None:
        """The attempt a callback token was issued for, or None for a token never issued."""
        return await self._call(functions.callback_target(token))

    async def accept_callback(
        self, token: str, status: Mapping[str, Any], *, ref: str, state: str, final: bool, now_ms: int
    ) -> CallbackAnswer:
        """Take a parsed status of the call `ref` in for the token's attempt (flashcall_callback_accept):
        queued for the workers only when `ref` is the attempt's call and the attempt has no
        outcome yet; `state` is the provider's own name for it, `final` whether it settles the call."""
        return await self._call(
            functions.callback_accept(token, status, ref=ref, state=state, final=final, now_ms=now_ms)
        )

    async def schedule_poll(self, verification_id: str, *, attempt: int, due_ms: int) -> bool:
        return await self._call(functions.schedule_poll(verification_id, attempt=attempt, due_ms=due_ms))

    async def late_status(
        self, verification_id: str, *, attempt: int, provider: str, state: str, now_ms: int
    ) -> None:
        await self._call(
            functions.late_status(
                verification_id, attempt=attempt, provider=provider, state=state, now_ms=now_ms
            )
        )

    async def drain_metrics(self) -> dict[str, str]:
        """The library's counts since the last drain (each taken by one caller only)."""
        return await self._call(functions.drain_metrics())

    async def fraud_report(self, *, now_ms: int) -> list[functions.GuardChange]:
        """The conversion guard's holds and releases since the last report (functions.fraud_report)."""
        return await self._call(functions.fraud_report(now_ms=now_ms))

    async def queue_stats(self, *, now_ms: int) -> dict[str, Any]:
        """{"queued": {queue: n}, "dead": {queue: n}, "timers": {kind: n}, "backlog": {queue: n}};
        the backlog counts step and poll timers due at `now_ms` (docs/operations.md)."""
        return await self._call(functions.queue_stats(now_ms=now_ms))

    async def try_lease(self, key: str, *, ttl_ms: int) -> bool:
        """One holder cluster-wide for `ttl_ms` (work that one process does for all)."""
        try:
            return bool(await self._client.set(key, "1", nx=True, px=ttl_ms))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error})") from error
