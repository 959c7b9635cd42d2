"""What the actors do: move a verification forward, and check a typed code.

An attempt is claimed in Redis before its provider is called (compare-and-set on the
attempt number), so a message delivered twice, a duplicate timer or a redelivery after a
crash finds the attempt taken and calls nobody. Every state in which a verification
waits for something has a timer in Redis; when it fires, `advance` runs with cause
"timeout" and moves the verification on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

import structlog

from worker.core import codes
from worker.core.errors import ClaimUnreplicated, StoreUnavailable
from worker.core.verification import CallState, Channel, Outcome, Verification, moscow_day, price_e4
from worker.logs import redaction
from worker.logs.structured import get_logger
from worker.providers.base import CallStatus, Provider, SendRequest, SendResult, TransportFailure
from worker.redis.functions import AskProvider
from worker.redis.store import AdmissionGuard, Store
from worker.routing.config import LearningConfig, Policy, ProviderConfig, RoutingConfig, Step
from worker.routing.reload import Routing
from worker.routing.select import Choice, GiveUp, next_attempt
from worker.routing.state import RoutingState
from worker.verification import checks
from worker.verification.events import (
    AttemptEvent,
    CallStatusEvent,
    LogObserver,
    Observer,
    UnreplicatedClaimEvent,
)

__all__ = ["Verifier"]

log = get_logger(__name__)

_T = TypeVar("_T")

#: How long past a provider's own timeout a claimed attempt may stay without a result
#: before its timer declares the worker that claimed it dead.
CALL_GRACE_MS = 10_000
#: When an attempt failed and the next one could not be begun at once, the timer picks
#: the verification up after this long.
RECOVERY_MS = 15_000


#: A provider that reported it is out of money leaves rotation until a balance above zero
#: is read from it, or, for providers that tell no balance, for this long.
NO_MONEY_MS = 600_000

#: Waits between status polls of a delivered call (the last one repeats).
POLL_DELAYS_MS = (3_000, 5_000, 10_000, 20_000, 30_000)

#: A call state that ends an attempt, as the outcome routing falls back on.
_FAILED_STATES = {
    CallState.BUSY: Outcome.BUSY,
    CallState.NO_ANSWER: Outcome.NO_ANSWER,
    CallState.PROVIDER_ERROR: Outcome.PROVIDER_ERROR,
    CallState.CANCELED: Outcome.PROVIDER_ERROR,
}

_REFUSALS = frozenset({"breaker_open", "no_money", "budget_spent"})


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One attempt as it is claimed: what its claim, its call and their record need."""

    verification: Verification
    """The verification as it stood when the attempt was chosen."""
    choice: Choice
    settings: ProviderConfig
    code: str | None
    """The code the router made up; None when the provider makes it up."""
    callback_token: str
    """'' when the provider's answer is not awaited on a callback."""
    claimed_at_ms: int
    lease_ms: int
    """How long the claim holds the attempt without a result."""

    @property
    def number(self) -> int:
        """The attempt's number, counted from 1, as the store records it."""
        return self.verification.attempt + 1

    @property
    def lease_ends_ms(self) -> int:
        return self.claimed_at_ms + self.lease_ms


class Verifier:
    def __init__(
        self,
        *,
        store: Store,
        routing: Callable[[], Routing],
        state: Callable[[], RoutingState],
        code_secret: bytes,
        fresh_state: Callable[[], Awaitable[None]] | None = None,
        previous_code_secrets: Sequence[bytes] = (),
        callback_base_url: str | None = None,
        observer: Observer | None = None,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._observe = observer or LogObserver()
        self._callback_base = (callback_base_url or "").rstrip("/")
        self._store = store
        self._routing = routing
        self._state = state
        # Awaited before a routing decision: brings `state` up to date if it went stale.
        self._fresh_state = fresh_state
        self._secret = code_secret
        # Checks also accept codes hashed before a rotation of the secret (docs/operations.md).
        self._check_secrets = (code_secret, *previous_code_secrets)
        self._now = now
        # A provider's latency is measured on a clock that no adjustment of the wall clock moves.
        self._monotonic = monotonic

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    @redaction.scoped
    async def advance(
        self, verification_id: str, attempt: int, cause: str, start: Mapping[str, Any] | None = None
    ) -> None:
        """Make the next attempt of a verification whose attempt number is `attempt`.

        `start` (what flashcall_start enqueued with the first attempt) saves reading the
        verification back: if it changed meanwhile (canceled, or a duplicate message already
        made the attempt), the claim of the attempt says so.
        """
        v = await self._awaiting_attempt(verification_id, attempt, cause, start)
        if v is None:
            return
        if self._fresh_state is not None:
            await self._fresh_state()
        snapshot = self._routing()
        policy = _policy(snapshot.config, v)
        # Providers that refused this attempt when it was claimed (breaker, money, budget):
        # the next choice leaves them out, and no attempt is spent on them.
        refused: dict[str, str] = {}
        while True:
            decision = next_attempt(
                snapshot.config,
                policy,
                snapshot.providers,
                v,
                state=self._state(),
                now_ms=self._now_ms(),
                refused=refused,
            )
            if isinstance(decision, GiveUp):
                await self._give_up(v, decision)
                return
            planned = self._plan(v, decision, snapshot.config)
            claimed, admission = await self._claim(planned, snapshot.config.learning)
            if claimed in _REFUSALS:
                log.info("provider refused the attempt", reason=claimed)
                refused[decision.provider.name] = claimed
                continue
            if claimed == "fraud_suspected":
                # Its number range is held: no call more, though a code delivered may still be typed.
                await self._give_up(v, GiveUp("fraud_suspected", hard=False))
                return
            if claimed != "ok":
                log.info("attempt not claimed", result=claimed)
                return
            result, latency = await self._send(planned)
            await snapshot.breakers.record(decision.provider.name, admission, result)
            failed = await self._settle(planned, policy, result, latency)
            if failed is None:
                return
            v = failed

    async def _awaiting_attempt(
        self, verification_id: str, attempt: int, cause: str, start: Mapping[str, Any] | None
    ) -> Verification | None:
        """The verification, if this message is the one to make its next attempt: None when
        it is gone, final, past this attempt or has it in flight (a timer that fires on an
        attempt in flight settles it as timed out first)."""
        first = start is not None and attempt == 0
        v = (
            Verification.first(verification_id, start)
            if first and start
            else await self._store.load(verification_id)
        )
        if v is None:
            log.warning("verification not found; nothing to do", cause=cause)
            return None
        _bind(v)
        if v.final or v.attempt != attempt:
            log.debug("stale message ignored", cause=cause, status=v.status, current_attempt=v.attempt)
            return None
        if v.attempt_state in ("calling", "delivered", "unknown"):
            if cause != "timeout":
                log.debug("attempt already in flight", cause=cause)
                return None
            return await self._time_out(v)
        return v

    def _plan(self, v: Verification, choice: Choice, config: RoutingConfig) -> _Attempt:
        """The attempt `choice` makes, before its claim: its log context bound, its code
        made up (when the router makes it) and hidden from every log line from here on,
        its lease counted from now."""
        provider, step = choice.provider, choice.step
        settings = config.providers[provider.name]
        structlog.contextvars.bind_contextvars(
            provider=provider.name, channel=str(step.channel), step=choice.step_index
        )
        generate = provider.router_generates_code(step.channel, v.code_length)
        code = codes.generate(v.code_length) if generate else None
        # From here on in this attempt's context, no log line may show it (nor an HTTP
        # client's line about the request that carries it).
        redaction.hide(code)
        now = self._now_ms()
        lease_ms = int(provider.timeout * 1000) + CALL_GRACE_MS
        token = secrets.token_urlsafe(24) if self._callback_base and provider.takes_callback_url else ""
        return _Attempt(
            verification=v,
            choice=choice,
            settings=settings,
            code=code,
            callback_token=token,
            claimed_at_ms=now,
            lease_ms=lease_ms,
        )

    async def _claim(self, planned: _Attempt, learning: LearningConfig | None) -> tuple[str, str]:
        """Claim the attempt in Redis, if its provider admits a call: ('ok', admission), or
        (why not, '') as Store.begin_attempt tells."""
        v, choice = planned.verification, planned.choice
        try:
            claimed, admission, demoted = await self._store.begin_attempt(
                v.id,
                expected_attempt=v.attempt,
                now_ms=planned.claimed_at_ms,
                step=choice.step_index,
                channel=choice.step.channel,
                provider=choice.provider.name,
                code_hash=codes.code_hash(self._secret, v.id, planned.code) if planned.code else "",
                deadline_ms=planned.lease_ends_ms,
                guard=_guard(planned),
                callback_token=planned.callback_token,
                provider_type=choice.provider.type,
                operator=choice.operator,
                learn=learning.spec if learning else "",
                lead=(choice.lead.key, choice.lead.previous, choice.lead.current) if choice.lead else None,
            )
        except ClaimUnreplicated as unreplicated:
            # A failover could lose this claim and let the attempt be claimed and called
            # again: nobody is called, and the retried message claims again wherever the
            # truth is then (if this claim survived, it finds the attempt in flight).
            self._observe.claim_unreplicated(
                UnreplicatedClaimEvent(
                    verification_id=v.id,
                    attempt=planned.number,
                    provider=choice.provider.name,
                    written=unreplicated.written,
                )
            )
            raise
        if demoted and choice.lead:
            log.warning(
                "learned routing demoted a provider: its attempts convert too rarely for their cost",
                demoted=choice.lead.previous,
                leader=choice.lead.current,
                where=choice.lead.key,
            )
        return claimed, admission

    async def _send(self, planned: _Attempt) -> tuple[SendResult, float]:
        """Call the provider: its answer, and how many seconds it took."""
        v, provider = planned.verification, planned.choice.provider
        token = planned.callback_token
        started = self._monotonic()
        result = await provider.send(
            SendRequest(
                channel=planned.choice.step.channel,
                phone=v.phone,
                code_length=v.code_length,
                code=planned.code,
                callback_url=f"{self._callback_base}/callbacks/{provider.name}/{token}" if token else None,
                previous_ref=v.refs.get(provider.name),
            )
        )
        redaction.hide(result.code)
        return result, self._monotonic() - started

    async def _settle(
        self, planned: _Attempt, policy: Policy, result: SendResult, latency: float
    ) -> Verification | None:
        """Tell the observers about the provider's answer and record it, while the attempt's
        lease lasts: the verification after this failed attempt, for the next one, or None
        when nothing is left to do here (delivered, or the failure was not recorded)."""
        v, choice = planned.verification, planned.choice
        latency_ms = int(latency * 1000)
        now = self._now_ms()
        delivered = result.outcome is Outcome.DELIVERED
        price = (result.price if result.price is not None else choice.cost) if delivered else None
        self._observe.attempt(
            AttemptEvent(
                verification_id=v.id,
                attempt=planned.number,
                provider=choice.provider.name,
                channel=choice.step.channel,
                step=choice.step_index,
                outcome=result.outcome,
                latency=latency,
                price=price,
                error_code=result.error_code,
                breaker_failure=result.breaker_failure,
            )
        )
        if price is not None:
            await self._record_delivery(planned, policy, result, price, now_ms=now, latency_ms=latency_ms)
            return None
        recorded = await self._while_leased(
            planned.lease_ends_ms,
            self._store.attempt_failed,
            v.id,
            attempt=planned.number,
            now_ms=now,
            outcome=result.outcome,
            error_code=result.error_code or "",
            state="failed",
            recovery_at_ms=now + RECOVERY_MS,
            discard_code=not result.uncertain,
            provider_fault=result.breaker_failure,
            latency_ms=latency_ms,
            no_money_ms=NO_MONEY_MS,
        )
        if recorded != "ok":
            return None
        return v.after_attempt(
            step=choice.step_index,
            channel=choice.step.channel,
            provider=choice.provider.name,
            state="failed",
            reason=result.outcome,
        )

    async def _record_delivery(
        self,
        planned: _Attempt,
        policy: Policy,
        result: SendResult,
        price: Decimal,
        *,
        now_ms: int,
        latency_ms: int,
    ) -> None:
        """Record a delivered attempt: what it cost, its code's hash or the provider that
        checks it, when its step times out and when its call's state is asked for."""
        v, choice = planned.verification, planned.choice
        step = choice.step
        poll = self._should_poll(choice.provider, step, policy, planned.callback_token)
        await self._while_leased(
            planned.lease_ends_ms,
            self._store.attempt_delivered,
            v.id,
            attempt=planned.number,
            now_ms=now_ms,
            provider=choice.provider.name,
            channel=step.channel,
            step=choice.step_index,
            ref=result.ref or "",
            price_e4=price_e4(price),
            code_hash=codes.code_hash(self._secret, v.id, result.code) if result.code else "",
            provider_checks=result.provider_checks_code,
            step_deadline_ms=now_ms + int(step.timeout * 1000) if step.timeout else 0,
            latency_ms=latency_ms,
            day=moscow_day(now_ms),
            poll_at_ms=now_ms + POLL_DELAYS_MS[0] if poll else 0,
        )

    async def _while_leased(
        self, lease_ends_ms: int, record: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any
    ) -> _T:
        """Record a provider's answer, retrying while Redis is away (a restart, a failover)
        until the attempt's lease ends: an answer given up on leaves the call `unknown`, and
        the user waits for the step's timeout instead of the answer's seconds."""
        delay_s = 0.1
        while True:
            try:
                return await record(*args, **kwargs)
            except StoreUnavailable:
                if self._now_ms() + delay_s * 1000 >= lease_ends_ms:
                    raise
                log.warning("Redis unreachable; recording the provider's answer again", retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)

    async def on_status(self, verification_id: str, attempt: int, provider: str, status: CallStatus) -> None:
        """A provider's word on a delivered attempt (its callback, or a poll): a call that
        failed to reach the user (busy, no answer, failed) moves the verification on."""
        v = await self._store.load(verification_id)
        if v is None:
            log.info("status for an unknown verification ignored", provider=provider)
            return
        _bind(v)
        current = not v.final and v.attempt == attempt and v.provider == provider
        if not current or v.attempt_state != "delivered":
            await self._store.late_status(
                v.id, attempt=attempt, provider=provider, state=status.provider_state, now_ms=self._now_ms()
            )
            log.info("late status recorded and ignored", status_attempt=attempt, state=status.provider_state)
            return
        if status.ref != v.provider_ref:
            # The receiver refuses these; a message queued by other means (or before the
            # receiver compared call ids) must not move the verification on either.
            log.warning("status of another call ignored", status_attempt=attempt, state=status.provider_state)
            return
        if status.state is CallState.IN_PROGRESS:
            await self._schedule_poll(v)
            return
        outcome = _FAILED_STATES.get(status.state)
        if outcome is Outcome.NO_ANSWER and v.channel == Channel.FLASHCALL:
            policy = self._routing().config.policies.get(v.policy)
            if policy is None or policy.flashcall_no_answer == "delivered":
                outcome = None
        self._observe.call_status(
            CallStatusEvent(
                verification_id=v.id,
                attempt=attempt,
                provider=provider,
                channel=v.channel,
                state=status.state,
                provider_state=status.provider_state,
                moved_on=outcome is not None,
            )
        )
        if outcome is None:
            return
        now = self._now_ms()
        recorded = await self._store.attempt_failed(
            v.id,
            attempt=attempt,
            now_ms=now,
            outcome=outcome,
            error_code=status.provider_state,
            state="failed",
            recovery_at_ms=now + RECOVERY_MS,
            discard_code=False,
        )
        if recorded == "ok":
            await self.advance(v.id, attempt, "status")

    async def poll(self, verification_id: str, attempt: int) -> None:
        """Ask the provider where the current attempt's call stands."""
        v = await self._store.load(verification_id)
        if v is None or v.final or v.attempt != attempt or v.attempt_state != "delivered":
            return
        _bind(v)
        provider = self._routing().providers.get(v.provider)
        if provider is None or not v.provider_ref:
            return
        try:
            status = await provider.call_status(v.provider_ref)
        except TransportFailure as failure:
            log.info("call state unknown for now", error_code=failure.error_code)
            await self._schedule_poll(v)
            return
        if status is not None:
            await self.on_status(v.id, attempt, v.provider, status)

    @staticmethod
    def _should_poll(provider: Provider, step: Step, policy: Policy, token: str) -> bool:
        """Without callbacks, a provider that can tell a call's state is asked about it,
        unless nothing it could say would change what happens next: a flash call's state
        matters only to a policy that falls back on its no answer (its other failures are
        left to the step timeout)."""
        if token or not provider.polls_status:
            return False
        return step.channel is not Channel.FLASHCALL or policy.flashcall_no_answer == "fallback"

    async def _schedule_poll(self, v: Verification) -> None:
        delay = POLL_DELAYS_MS[min(v.polls + 1, len(POLL_DELAYS_MS) - 1)]
        await self._store.schedule_poll(v.id, attempt=v.attempt, due_ms=self._now_ms() + delay)

    async def _time_out(self, v: Verification) -> Verification | None:
        """The current attempt's deadline passed: settle it as timed out.

        A call still `calling` at its deadline lost its worker (or its answer) mid-call: it
        may have reached the user, whose code stays valid. Calling them again at once
        through another provider would be the double call this avoids: the attempt waits,
        `unknown`, until its step's timeout from the claim, as a delivered one would, and
        then moves on to the next step.
        """
        now = self._now_ms()
        if v.attempt_state == "unknown" and self._step_deadline_ms(v) > now:
            # The lease's timeout again (a redelivery): the step's own comes later.
            log.debug("early timeout of an unknown attempt ignored", attempt=v.attempt)
            return None
        if v.attempt_state == "calling":
            wait_until = self._step_deadline_ms(v)
            if wait_until > now:
                recorded = await self._store.attempt_failed(
                    v.id,
                    attempt=v.attempt,
                    now_ms=now,
                    outcome=Outcome.TIMEOUT,
                    error_code="outcome_unknown",
                    state="unknown",
                    recovery_at_ms=wait_until,
                    discard_code=False,
                )
                if recorded == "ok":
                    log.warning(
                        "call outcome unknown; no new call before the step's timeout",
                        attempt=v.attempt,
                        waits_ms=wait_until - now,
                    )
                return None
        recorded = await self._store.attempt_failed(
            v.id,
            attempt=v.attempt,
            now_ms=now,
            outcome=Outcome.TIMEOUT,
            error_code="step_timeout" if v.attempt_state == "delivered" else "no_result",
            state="timed_out",
            recovery_at_ms=now + RECOVERY_MS,
            discard_code=False,
        )
        if recorded != "ok":
            return None
        log.info("attempt timed out", attempt=v.attempt, state=v.attempt_state)
        return replace(v, attempt_state="timed_out", reason=Outcome.TIMEOUT.value)

    def _step_deadline_ms(self, v: Verification) -> int:
        """When the current attempt's step times out, counted from its claim (0: no timeout)."""
        config = self._routing().config
        policy = config.policies.get(v.policy) or config.policies["default"]
        steps = policy.steps_for(v.channels)
        timeout = steps[v.step].timeout if v.step is not None and v.step < len(steps) else None
        return v.claimed_at_ms + int(timeout * 1000) if timeout else 0

    async def _give_up(self, v: Verification, decision: GiveUp) -> None:
        result = await self._store.give_up(
            v.id, attempt=v.attempt, now_ms=self._now_ms(), reason=decision.reason, hard=decision.hard
        )
        if result == "failed":
            log.warning("verification failed", reason=decision.reason)
        elif result == "waiting":
            log.info("no further attempt; waiting for the user's code", reason=decision.reason)

    async def check(self, verification_id: str, code: str, reply_key: str) -> str:
        """Compare a typed code with those delivered and answer on the reply key (the same
        as worker/verification/checks.py does on the worker thread, and what it falls back to)."""
        now_ms = self._now_ms()
        proof = checks.hash_proof(self._check_secrets, verification_id, code)
        result = await self._store.apply_check(
            verification_id, proof=proof, reply_key=reply_key, now_ms=now_ms
        )
        if isinstance(result, AskProvider):
            return await self.check_with_provider(verification_id, code, reply_key, result)
        log.info("code checked", result=result)
        return result

    async def check_with_provider(
        self, verification_id: str, code: str, reply_key: str, ask: AskProvider
    ) -> str:
        """Finish a check that flashcall_apply_check answered with AskProvider: the provider
        that keeps the verification's code judges it, and its verdict is applied and answered."""
        if not ask.provider:
            ask = await self._store.check_material(verification_id)
        matched = bool(ask.provider) and await self._ask_provider(ask.provider, ask.phone, code)
        result = await self._store.apply_check(
            verification_id, proof=checks.verdict(matched), reply_key=reply_key, now_ms=self._now_ms()
        )
        if isinstance(result, AskProvider):
            raise RuntimeError("flashcall_apply_check asked for the provider again, given its verdict")
        log.info("code checked", result=result)
        return result

    async def _ask_provider(self, name: str, phone: str, code: str) -> bool:
        """A code the provider made up and kept (Telphin): only the provider can tell."""
        provider = self._routing().providers.get(name)
        if provider is None:
            log.warning("the provider that holds this code is no longer configured", provider=name)
            return False
        verdict = await provider.check_code(phone, code)
        await self._routing().breakers.record(name, "closed", verdict)
        if verdict.breaker_failure:
            log.warning("provider could not check the code", provider=name, error_code=verdict.error_code)
        return verdict.matched


def _policy(config: RoutingConfig, v: Verification) -> Policy:
    policy = config.policies.get(v.policy)
    if policy is None:
        log.warning("policy no longer in routing.yaml; using default", policy=v.policy)
        return config.policies["default"]
    return policy


def _guard(planned: _Attempt) -> AdmissionGuard:
    """What the claim checks in Redis before it admits the call: the provider's breaker,
    its slow calls, and its daily budget against this attempt's cost."""
    settings = planned.settings
    return AdmissionGuard(
        reset_ms=int(settings.breaker.reset_timeout * 1000),
        lease_ms=planned.lease_ms,
        fail_max=settings.breaker.fail_max,
        cost_e4=price_e4(planned.choice.cost),
        budget_e4=price_e4(settings.daily_budget),
        day=moscow_day(planned.claimed_at_ms),
        slow_ms=int(settings.breaker.slow_call * 1000) if settings.breaker.slow_call else 0,
    )


def _bind(v: Verification) -> None:
    # The message's log context (worker/process/middleware/logcontext.py) already names the
    # verification; this adds where it stands, once it stands somewhere.
    if v.provider:
        structlog.contextvars.bind_contextvars(provider=v.provider, channel=v.channel, step=v.step)
