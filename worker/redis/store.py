"""The verification store: reads of `flashcall:v:<id>` and the library's atomic transitions.

Every change of a verification goes through one function of worker/redis/flashcall.lua;
this module only names their arguments. redis-py retries commands after connection
errors, so each function is safe to run twice (they compare-and-set on the attempt
number, and a delivery is settled once). A claim also waits for a replica while the
primary has one (worker/redis/replication.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

import redis
import redis.asyncio

from worker.core import keys
from worker.core.errors import StoreUnavailable
from worker.core.verification import Verification
from worker.redis.connections import async_client
from worker.redis.library import install_async
from worker.redis.replication import DEFAULT_WAIT_MS, ReplicaWatch

__all__ = [
    "AdmissionGuard",
    "CallbackAnswer",
    "CallbackTarget",
    "CheckMaterial",
    "PublishedConfig",
    "Store",
]


@dataclass(frozen=True, slots=True)
class CheckMaterial:
    provider_checks: str | None
    """A provider that delivered a code of its own, which only it can check (Telphin)."""
    phone: str


@dataclass(frozen=True, slots=True)
class AdmissionGuard:
    """What the library needs to decide whether a provider may take a call now."""

    reset_ms: int
    lease_ms: int
    """How long a half-open trial (or a call made while failing) holds its place."""
    fail_max: int
    cost_e4: int
    budget_e4: int
    """The provider's daily budget, 0 for none."""
    day: str
    """Today in Moscow, YYYYMMDD: budgets reset at Moscow midnight."""
    slow_ms: int = 0
    """A call unanswered this long makes the provider suspect (routing.yaml's breaker.slow_call)."""


CallbackAnswer = Literal["accepted", "repeat", "held", "mismatch", "closed", "busy", "unknown"]
"""What flashcall_callback_accept made of a status post (worker/redis/flashcall.lua says each)."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """The attempt a callback token stands for."""

    id: str
    attempt: int
    provider: str
    type: str


@dataclass(frozen=True, slots=True)
class PublishedConfig:
    policies: tuple[str, ...]
    per_phone: tuple[tuple[int, int], ...]
    """(limit, per milliseconds) for each per-number window."""

    def to_json(self) -> str:
        return json.dumps(
            {"policies": list(self.policies), "per_phone": [list(rule) for rule in self.per_phone]}
        )


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

    async def _call(self, function: str, *args: str | int) -> Any:
        answer, _ = await self._call_then_wait(function, args, wait=False)
        return answer

    async def _call_then_wait(
        self, function: str, args: Sequence[str | int], *, wait: bool
    ) -> tuple[Any, int]:
        """FCALL, and with `wait` a WAIT for one replica on the same connection (WAIT counts
        the writes of its own connection): the answer, and how many replicas acknowledged."""
        try:
            try:
                return await self._fcall(function, args, wait=wait)
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
                return await self._fcall(function, args, wait=wait)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error

    async def _fcall(self, function: str, args: Sequence[str | int], *, wait: bool) -> tuple[Any, int]:
        if not wait:
            return await self._client.fcall(function, 0, *args), 0
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.fcall(function, 0, *args)
            pipe.wait(1, self.replicas.wait_ms)
            answer, acknowledged = await pipe.execute()
        return answer, int(acknowledged)

    async def _reinstall(self) -> None:
        await install_async(self._client)
        if self._published is not None:
            await self._client.fcall("flashcall_publish_config", 0, self._published.to_json())

    async def start(self, request_json: str) -> str:
        """flashcall_start, for start requests that arrive as queue messages."""
        result: str = await self._call("flashcall_start", request_json)
        return result

    async def load(self, verification_id: str) -> Verification | None:
        try:
            fields = cast(dict[str, str], await self._client.hgetall(keys.verification(verification_id)))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        return Verification.from_hash(fields) if fields else None

    async def check_material(self, verification_id: str) -> CheckMaterial:
        """What a check compares the typed code with."""
        try:
            checker, phone = cast(
                list[str | None],
                await self._client.hmget(keys.verification(verification_id), ["provider_checks", "phone"]),
            )
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        return CheckMaterial(provider_checks=checker or None, phone=phone or "")

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
    ) -> tuple[str, str, bool]:
        """Claim the next attempt if the provider admits a call: ('ok', admission, demoted),
        where the admission is 'closed', 'probe' or 'trial' (see the breaker) and `demoted`
        whether this attempt's `lead` (key, previous, new) demoted the previous leading
        choice; or (why not, '', False): 'final', 'stale', 'in_flight', 'not_found', or the
        provider's refusal 'breaker_open', 'no_money', 'budget_spent'.

        `learn` ('<memory>:<half-life ms>', empty when routing does not learn) and `operator`
        say where the attempt's outcome is learned.

        While the primary has a replica, a claim counts only once a replica holds it: one that
        none acknowledged raises ClaimUnreplicated (a StoreUnavailable), and so does every claim
        while the watch holds them (worker/redis/replication.py)."""
        wait = await self.replicas.before_claim()
        answer, acknowledged = await self._call_then_wait(
            "flashcall_begin_attempt",
            (
                verification_id,
                expected_attempt,
                now_ms,
                step,
                channel,
                provider,
                code_hash,
                deadline_ms,
                guard.reset_ms,
                guard.lease_ms,
                guard.fail_max,
                guard.cost_e4,
                guard.budget_e4,
                guard.day,
                callback_token,
                provider_type,
                guard.slow_ms,
                operator,
                learn,
                *(lead or ("", "", "")),
            ),
            wait=wait,
        )
        if wait and answer[0] == "ok":
            if not acknowledged:
                raise await self.replicas.unacknowledged()
            self.replicas.acknowledged()
        return answer[0], answer[1] if len(answer) > 1 else "", len(answer) > 2

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
        """Record a delivery; `poll_at_ms` schedules the first status poll (0: none)."""
        result: str = await self._call(
            "flashcall_attempt_delivered",
            verification_id,
            attempt,
            now_ms,
            provider,
            channel,
            step,
            ref,
            price_e4,
            code_hash,
            "1" if provider_checks else "0",
            step_deadline_ms,
            latency_ms,
            day,
            poll_at_ms,
        )
        return result

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
        """Settle the attempt as failed. `discard_code` when the provider surely placed no call,
        so that the code the router made for it stops being accepted; `latency_ms` (-1 for a
        step that timed out later) when the provider answered, which then counts in its
        health (as a fault of the provider's when `provider_fault`)."""
        result: str = await self._call(
            "flashcall_attempt_failed",
            verification_id,
            attempt,
            now_ms,
            outcome,
            error_code,
            state,
            recovery_at_ms,
            "1" if discard_code else "0",
            "1" if provider_fault else "0",
            latency_ms,
            no_money_ms,
        )
        return result

    async def give_up(
        self, verification_id: str, *, attempt: int, now_ms: int, reason: str, hard: bool
    ) -> str:
        """'failed', 'waiting' (a code was delivered: wait for the user until expiry), or why not."""
        result: str = await self._call(
            "flashcall_give_up", verification_id, attempt, now_ms, reason, "1" if hard else "0"
        )
        return result

    async def apply_check(self, verification_id: str, *, proof: str, reply_key: str, now_ms: int) -> str:
        """Answer a check on its reply key; `proof` is a verdict or the typed code's hash
        (worker/verification/checks.py), and the answer ASK_PROVIDER when only the provider can judge."""
        result: str = await self._call("flashcall_apply_check", verification_id, proof, reply_key, now_ms)
        return result

    async def fire_timers(self, *, now_ms: int, limit: int) -> int:
        fired: int = await self._call("flashcall_fire_timers", now_ms, limit)
        return fired

    async def publish_config(self, config: PublishedConfig) -> None:
        """Tell flashcall_start which policies exist and which per-number limits hold;
        published again whenever the library is reinstalled."""
        self._published = config
        await self._call("flashcall_publish_config", config.to_json())

    async def learning_state(self, providers: Sequence[str]) -> Any:
        """Learned conversion per provider and the leading choices (flashcall_learning_state)."""
        return json.loads(await self._call("flashcall_learning_state", *providers))

    async def routing_state(self, *, now_ms: int, window_ms: int, day: str, providers: Sequence[str]) -> Any:
        """Breakers, money, spend and health of these providers, as one JSON document."""
        answer: str = await self._call("flashcall_routing_state", now_ms, window_ms, day, *providers)
        return json.loads(answer)

    async def provider_balance(self, provider: str, *, balance: Decimal, now_ms: int) -> None:
        await self._call("flashcall_provider_balance", provider, str(balance), now_ms)

    async def callback_target(self, token: str) -> CallbackTarget | None:
        """The attempt a callback token was issued for, or None for a token never issued."""
        raw: str | None = await self._call("flashcall_callback_target", token)
        return CallbackTarget(**json.loads(raw)) if raw else None

    async def accept_callback(
        self, token: str, status: Mapping[str, Any], *, ref: str, state: str, final: bool, now_ms: int
    ) -> CallbackAnswer:
        """Take a parsed status of the call `ref` in for the token's attempt (flashcall_callback_accept):
        queued for the workers only when `ref` is the attempt's call and the attempt has no
        outcome yet; `state` is the provider's own name for it, `final` whether it settles the call."""
        answer: CallbackAnswer = await self._call(
            "flashcall_callback_accept", token, json.dumps(status), now_ms, ref, state, "1" if final else "0"
        )
        return answer

    async def schedule_poll(self, verification_id: str, *, attempt: int, due_ms: int) -> bool:
        answer: str = await self._call("flashcall_schedule_poll", verification_id, attempt, due_ms)
        return answer == "ok"

    async def late_status(
        self, verification_id: str, *, attempt: int, provider: str, state: str, now_ms: int
    ) -> None:
        await self._call("flashcall_late_status", verification_id, attempt, provider, state, now_ms)

    async def drain_metrics(self) -> dict[str, str]:
        """The library's counts since the last drain (each taken by one caller only)."""
        flat: list[str] = await self._call("flashcall_drain_metrics")
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def queue_stats(self, *, now_ms: int) -> Any:
        """{"queued": {queue: n}, "dead": {queue: n}, "timers": {kind: n}, "backlog": {queue: n}};
        the backlog counts step and poll timers due at `now_ms` (docs/operations.md)."""
        answer: str = await self._call("flashcall_queue_stats", now_ms)
        return json.loads(answer)

    async def try_lease(self, key: str, *, ttl_ms: int) -> bool:
        """One holder cluster-wide for `ttl_ms` (work that one process does for all)."""
        try:
            return bool(await self._client.set(key, "1", nx=True, px=ttl_ms))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error})") from error
