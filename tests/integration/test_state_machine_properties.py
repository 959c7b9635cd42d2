"""Properties of a verification's life over random interleavings of everything that happens to it.

A Hypothesis state machine plays every party against the flashcall library on a real
redis-server: producers (start, start again, check, cancel), workers (taking `advance`,
`call_status` and `check_code` messages off the real queues, sometimes twice, sometimes
dying before the acknowledgement, and making their calls as worker/redis/store.py and
worker/verification/checks.py make them), providers (answering calls, posting statuses) and the clock
(timers fired at an injected time, no sleeping). A model of the documented contract
(docs/protocol.md) predicts every answer and the stored state after each step, and these
invariants hold throughout:

- a final status never changes;
- a verification never compares more codes than its checks allow;
- nothing approves a verification after its expiry or its cancel;
- every verification ends in exactly one final state, with one final event;
- an attempt is claimed, so its provider called, at most once;
- a status reaches the workers only for its attempt's own call, once per state, and never
  after the attempt has an outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar, cast

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from worker.core import keys
from worker.core.codes import code_hash
from worker.core.verification import FINAL_STATUSES
from worker.providers.voicepassword.adapter import VoicePassword
from worker.redis import functions
from worker.redis.library import install
from worker.redis.store import AdmissionGuard, Store
from worker.verification.checks import CodeChecks

pytestmark = pytest.mark.integration

_T = TypeVar("_T")

SECRET = b"state-machine-code-secret"
PROVIDER = "vp"
MAX_CHECKS = 3
START_RECOVERY_MS = 30_000
CALL_LEASE_MS = 15_000
RECOVERY_MS = 15_000
MAX_VERIFICATIONS = 3
GUARD = AdmissionGuard(
    reset_ms=30_000, lease_ms=CALL_LEASE_MS, fail_max=5, cost_e4=3500, budget_e4=0, day="20261127"
)
FINAL_EVENTS = frozenset({"approved", "failed", "expired", "canceled"})
#: An attempt that still owns its verification: being placed, delivered, or perhaps placed.
IN_FLIGHT = ("calling", "delivered", "unknown")

# Codes the router or a provider makes up are 4 digits, drawn from a few so that two calls
# often carry the same code; a wrong code is 5 digits, so that it can never be one of them.
codes = st.sampled_from(["1111", "2222", "3333", "4444"])
wrong_codes = st.integers(0, 9999).map(lambda n: f"0{n:04d}")

PROPERTIES = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Model:
    """One verification as docs/protocol.md says it must be."""

    id: str
    expires_at: int
    step_due: int | None
    status: str = "pending"
    attempt: int = 0
    attempt_state: str = ""
    delivered: int = 0
    checks: int = 0
    wrong: int = 0
    expiry_armed: bool = True
    settled: set[int] = field(default_factory=set)
    valid: Counter[str] = field(default_factory=Counter)
    """Codes a check accepts (one entry per call that carried the code)."""
    pending: str | None = None
    """The code the router made for the attempt in flight, until the call is known placed."""
    compared: set[str] = field(default_factory=set)
    """Reply keys of the checks compared so far."""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def finish(self, status: str) -> None:
        self.status, self.step_due, self.expiry_armed = status, None, False

    def expire_if_due(self, now: int) -> None:
        if not self.final and now >= self.expires_at:
            self.finish("expired")

    def claim(self, expected: int, now: int, code: str | None, deadline: int) -> str:
        self.expire_if_due(now)
        if self.final:
            return "final"
        if self.attempt != expected:
            return "stale"
        if self.attempt_state in IN_FLIGHT:
            return "in_flight"
        if self.attempt_state == "exhausted":
            return "final"
        self.attempt, self.attempt_state, self.status = expected + 1, "calling", "sending"
        self.pending, self.step_due = code, deadline
        if code is not None:
            self.valid[code] += 1
        return "ok"

    def deliver(self, attempt: int, provider_code: str | None, deadline: int) -> str:
        if attempt in self.settled:
            return "duplicate"
        self.settled.add(attempt)
        self.delivered += 1
        if provider_code is not None:
            self.valid[provider_code] += 1
        if attempt != self.attempt or self.attempt_state != "calling":
            return "late"
        self.attempt_state, self.pending = "delivered", None
        if not self.final:
            self.status = "sent"
            self.step_due = deadline or None
        return "ok"

    def fail(self, attempt: int, *, state: str, discard: bool, recovery_at: int) -> str:
        if attempt != self.attempt or self.attempt_state not in IN_FLIGHT:
            return "stale"
        self.attempt_state = state
        if discard and self.pending is not None:
            # Only this call's code: the same digits delivered by another call stay valid.
            self.valid[self.pending] -= 1
            self.valid = +self.valid
        self.pending = None
        if not self.final:
            self.step_due = recovery_at
        return "ok"

    def give_up(self, attempt: int, now: int, *, hard: bool) -> str:
        self.expire_if_due(now)
        if self.final:
            return "final"
        if attempt != self.attempt or self.attempt_state in ("calling", "delivered"):
            return "stale"
        if not hard and self.delivered > 0:
            self.status, self.attempt_state, self.step_due = "sent", "exhausted", None
            return "waiting"
        self.finish("failed")
        return "failed"

    def producer_check(self) -> dict[str, Any] | None:
        """The answer flashcall_check gives at once, or None when it queues the check."""
        if self.status in ("expired", "canceled", "max_attempts"):
            return {"id": self.id, "result": self.status, "status": self.status}
        if self.status == "failed":
            left = max(0, MAX_CHECKS - self.checks)
            return {"id": self.id, "result": "rejected", "status": "failed", "attempts_left": left}
        if self.checks >= MAX_CHECKS:
            return {"id": self.id, "result": "max_attempts", "status": self.status}
        self.checks += 1
        return None

    def apply_check(self, reply_key: str, code: str, now: int) -> dict[str, Any]:
        """The worker's comparison of a queued check, and the answer it pushes."""
        self.expire_if_due(now)
        first_time = reply_key not in self.compared
        self.compared.add(reply_key)
        matched = self.valid[code] > 0
        left = max(0, MAX_CHECKS - self.checks)
        if self.status == "approved":
            result = "approved" if matched else "rejected"
        elif self.status == "failed":
            result = "rejected"
        elif self.final:
            result = self.status
        elif matched:
            self.finish("approved")
            result = "approved"
        else:
            # Only the third wrong code ends it, however many checks wait in the queue.
            self.wrong += first_time
            if self.wrong >= MAX_CHECKS:
                self.finish("max_attempts")
                result = "max_attempts"
            else:
                result = "rejected"
        return {"id": self.id, "result": result, "status": self.status, "attempts_left": left}

    def cancel(self) -> None:
        if not self.final:
            self.finish("canceled")

    def fire(self, now: int) -> tuple[int, int]:
        """(step timers, expiries) flashcall_fire_timers acts on at `now`."""
        advances = 0
        if self.step_due is not None and self.step_due <= now:
            self.step_due = None
            advances = int(not self.final)
        expiries = 0
        if self.expiry_armed and self.expires_at <= now:
            self.expiry_armed = False
            if not self.final:
                self.finish("expired")
                expiries = 1
        return advances, expiries


#: What a status post may carry: every state VoicePassword posts is final.
POSTED_STATES = ("ANSWERED", "BUSY", "NO ANSWER", "FAIL")
MAX_HELD_STATUSES = 4


def call_ref(verification_id: str, attempt: int) -> str:
    """The provider's id of an attempt's call (unique across verifications)."""
    return f"ref-{verification_id}-{attempt}"


@dataclass
class Token:
    """A callback token, as docs/operations.md says the receiver treats its posts."""

    id: str
    attempt: int
    ref: str | None = None
    """The attempt's call, once its delivery is recorded."""
    seen: set[str] = field(default_factory=set)
    held: list[tuple[str, str]] = field(default_factory=list)
    """(call id, state) of the posts that came before the delivery was recorded."""
    closed: bool = False

    def take(self, state: str) -> None:
        self.seen.add(state)
        self.closed = True  # every posted state is final

    def post(self, ref: str, state: str, verification: Model, now: int) -> str:
        """flashcall_callback_accept's answer; a status is queued when it is 'accepted'."""
        if (self.ref == ref and state in self.seen) or (ref, state) in self.held:
            return "repeat"
        if self.closed or not verification.expiry_armed or verification.expires_at <= now:
            return "closed"
        if self.ref is None:
            if len(self.held) >= MAX_HELD_STATUSES:
                return "busy"
            self.held.append((ref, state))
            return "held"
        if ref != self.ref:
            return "mismatch"
        self.take(state)
        return "accepted"

    def delivered(self, ref: str, *, live: bool) -> int:
        """The delivery is recorded: how many held statuses are queued now."""
        held, self.ref, self.held = self.held, ref, []
        self.closed |= not live
        queued = 0
        for held_ref, state in held:
            if not self.closed and held_ref == ref and state not in self.seen:
                self.take(state)
                queued += 1
        return queued

    def close(self) -> None:
        self.closed, self.held = True, []


@dataclass(frozen=True)
class Call:
    """An attempt a worker claimed and whose provider has not answered yet."""

    id: str
    attempt: int
    channel: str
    claimed_at: int
    step_timeout_ms: int | None
    """The step's timeout, from the claim (None: the step waits until expiry)."""

    @property
    def step_deadline(self) -> int:
        """When the step times out, as worker/verification/verifier.py reckons it (0: never)."""
        return self.claimed_at + self.step_timeout_ms if self.step_timeout_ms else 0


class VerificationLives(RuleBasedStateMachine):
    verifications = Bundle("verifications")
    redis_url: ClassVar[str]
    """The redis-server every run plays on (set by the test, below)."""

    def __init__(self) -> None:
        super().__init__()
        url = self.redis_url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.client.flushall()
        install(self.client)
        self.loop = asyncio.new_event_loop()
        self.store = Store.connect(url, pool_size=2)
        seconds, micros = self.client.time()
        self.now = int(seconds) * 1000 + int(micros) // 1000
        self.checks = CodeChecks(self.client, SECRET, now=lambda: self.now / 1000)
        self.models: dict[str, Model] = {}
        self.in_flight: set[Call] = set()
        self.calls: dict[tuple[str, int], Call] = {}
        self.tokens: dict[str, Token] = {}
        self.claims: Counter[tuple[str, int]] = Counter()
        self.final_seen: dict[str, str] = {}
        self.checks_queued: Counter[str] = Counter()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            if self.models:
                self.every_verification_ends_in_exactly_one_final_state()
        finally:
            self.run(self.store.aclose())
            self.loop.close()
            self.client.close()

    def every_verification_ends_in_exactly_one_final_state(self) -> None:
        """Past every lifetime, the timers leave nothing unfinished, and nothing finished twice."""
        self.now = max(model.expires_at for model in self.models.values()) + 1
        for model in self.models.values():
            model.fire(self.now)
        self.run(self.store.fire_timers(now_ms=self.now, limit=100))
        for verification_id in self.models:
            status = cast(str | None, self.client.hget(keys.verification(verification_id), "status"))
            assert status in FINAL_STATUSES, f"{verification_id} never ended: {status}"
            finals = self.final_events(verification_id)
            assert len(finals) == 1, f"{verification_id} ended {len(finals)} times: {finals}"

    # -- reading Redis ----------------------------------------------------------------------

    def redis_now(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def fields(self, verification_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.client.hgetall(keys.verification(verification_id)))

    def events(self, verification_id: str) -> list[dict[str, str]]:
        entries = cast(list[tuple[str, dict[str, str]]], self.client.xrange(keys.EVENTS))
        return [fields for _, fields in entries if fields["id"] == verification_id]

    def final_events(self, verification_id: str) -> list[str]:
        return [
            e["event"]
            for e in self.events(verification_id)
            if e["event"] in FINAL_EVENTS or (e["event"] == "rejected" and e["status"] == "max_attempts")
        ]

    def queued(self, queue: str) -> list[tuple[str, dict[str, Any]]]:
        ids = cast(list[str], self.client.lrange(keys.queue(queue), 0, -1))
        bodies = cast(list[str], self.client.hmget(keys.queue_messages(queue), ids)) if ids else []
        return [(mid, json.loads(body)) for mid, body in zip(ids, bodies, strict=True)]

    def statuses_queued(self, verification_id: str, attempt: int) -> int:
        return sum(
            1
            for _, message in self.queued(keys.VERIFY_QUEUE)
            if message["actor_name"] == "call_status" and message["args"][:2] == [verification_id, attempt]
        )

    def token_of(self, verification_id: str, attempt: int) -> Token | None:
        return self.tokens.get(f"tok-{verification_id}-{attempt}")

    def acknowledge(self, queue: str, message_id: str) -> None:
        self.client.lrem(keys.queue(queue), 1, message_id)
        self.client.hdel(keys.queue_messages(queue), message_id)

    # -- producers --------------------------------------------------------------------------

    @precondition(lambda self: len(self.models) < MAX_VERIFICATIONS)
    @rule(target=verifications, ttl=st.sampled_from([30, 90, 600]))
    def producer_starts(self, ttl: int) -> str:
        verification_id = f"order-{len(self.models) + 1}"
        request = {"id": verification_id, "phone": f"+7999000000{len(self.models) + 1}", "ttl": ttl}
        answer = functions.start(json.dumps(request)).run(self.client)
        assert answer == {"id": verification_id, "status": "pending", "created": True}
        stored = self.fields(verification_id)
        self.models[verification_id] = Model(
            id=verification_id,
            expires_at=int(stored["expires_at"]),
            step_due=int(stored["created_at"]) + START_RECOVERY_MS,
        )
        return verification_id

    @rule(verification_id=verifications)
    def producer_starts_the_same_id_again(self, verification_id: str) -> None:
        model = self.models[verification_id]
        assert self.redis_now() < model.expires_at  # the Redis clock never reaches a lifetime's end
        number = f"+7999000000{list(self.models).index(verification_id) + 1}"
        request = json.dumps({"id": verification_id, "phone": number})
        answer = functions.start(request).run(self.client)
        assert answer == {"id": verification_id, "status": model.status, "created": False}

    @rule(verification_id=verifications, right=st.booleans(), data=st.data())
    def producer_checks_a_code(self, verification_id: str, right: bool, data: st.DataObject) -> None:
        model = self.models[verification_id]
        typed = data.draw(st.sampled_from(sorted(model.valid)) if right and model.valid else wrong_codes)
        reply_key = functions.check(json.dumps({"id": verification_id, "code": typed})).run(self.client)
        answered_at_once = model.producer_check()
        if answered_at_once is not None:
            assert json.loads(cast(str, self.client.lpop(reply_key))) == answered_at_once
            return
        assert self.client.llen(reply_key) == 0
        assert [verification_id, typed, reply_key] in [m["args"] for _, m in self.queued(keys.CHECK_QUEUE)]
        self.checks_queued[verification_id] += 1

    @rule(verification_id=verifications)
    def producer_cancels(self, verification_id: str) -> None:
        model = self.models[verification_id]
        model.cancel()
        answer = functions.cancel(verification_id).run(self.client)
        assert answer["status"] == model.status

    # -- workers ----------------------------------------------------------------------------

    @precondition(lambda self: self.client.llen(keys.queue(keys.VERIFY_QUEUE)) > 0)
    @rule(data=st.data(), delivery=st.sampled_from(["once", "twice", "dies before the ack"]))
    def worker_takes_a_verification_message(self, data: st.DataObject, delivery: str) -> None:
        message_id, message = data.draw(st.sampled_from(self.queued(keys.VERIFY_QUEUE)))
        for _ in range(2 if delivery == "twice" else 1):
            self.process(message, data)
        if delivery != "dies before the ack":
            self.acknowledge(keys.VERIFY_QUEUE, message_id)

    @precondition(lambda self: self.client.llen(keys.queue(keys.CHECK_QUEUE)) > 0)
    @rule(data=st.data(), delivery=st.sampled_from(["once", "twice", "dies before the ack"]))
    def worker_checks_a_queued_code(self, data: st.DataObject, delivery: str) -> None:
        message_id, message = data.draw(st.sampled_from(self.queued(keys.CHECK_QUEUE)))
        verification_id, typed, reply_key = message["args"]
        model = self.models[verification_id]
        # worker/verification/checks.py reads its clock in seconds and sends milliseconds.
        checked_at = int(self.now / 1000 * 1000)
        for _ in range(2 if delivery == "twice" else 1):
            expected = model.apply_check(reply_key, typed, checked_at)
            assert self.checks.check(verification_id, typed, reply_key) == expected["result"]
            assert json.loads(cast(str, self.client.lpop(reply_key))) == expected
        if delivery != "dies before the ack":
            self.acknowledge(keys.CHECK_QUEUE, message_id)

    def process(self, message: dict[str, Any], data: st.DataObject) -> None:
        if message["actor_name"] == "advance":
            self.advance(*message["args"], data=data)
        else:
            assert message["actor_name"] == "call_status"
            self.on_status(*message["args"], data=data)

    def advance(
        self,
        verification_id: str,
        attempt: int,
        cause: str,
        start: dict[str, Any] | None = None,
        *,
        data: st.DataObject,
    ) -> None:
        """What worker/verification/verifier.py's advance does, the call left to `provider_answers`."""
        if start is not None and attempt == 0:
            status, current, attempt_state = "pending", 0, ""
        else:
            stored = self.fields(verification_id)
            status, current, attempt_state = stored["status"], int(stored["attempt"]), stored["attempt_state"]
        if status in FINAL_STATUSES or current != attempt:
            return
        if attempt_state in IN_FLIGHT:
            if cause != "timeout":
                return
            step_deadline = self.calls[verification_id, attempt].step_deadline
            if attempt_state == "unknown" and step_deadline > self.now:
                return  # the lease's timer again: the step's own comes later
            if attempt_state == "calling" and step_deadline > self.now:
                # The worker that claimed it died mid-call: the call may have reached the
                # user, so nobody is called again before the step's timeout.
                self.attempt_failed(
                    verification_id,
                    attempt,
                    outcome="timeout",
                    error_code="outcome_unknown",
                    state="unknown",
                    discard=False,
                    recovery_at=step_deadline,
                )
                return
            settled = self.attempt_failed(
                verification_id,
                attempt,
                outcome="timeout",
                error_code="step_timeout" if attempt_state == "delivered" else "no_result",
                state="timed_out",
                discard=False,
            )
            if settled != "ok":
                return
        self.route_on(verification_id, attempt, data)

    def route_on(self, verification_id: str, attempt: int, data: st.DataObject) -> None:
        """Routing's next move: claim the next provider's call, or give up."""
        model = self.models[verification_id]
        move = data.draw(st.sampled_from(["call", "call", "give up", "give up for good"]))
        if move != "call":
            hard = move == "give up for good"
            expected = model.give_up(attempt, self.now, hard=hard)
            answer = self.run(
                self.store.give_up(verification_id, attempt=attempt, now_ms=self.now, reason="x", hard=hard)
            )
            assert answer == expected
            return
        code = data.draw(st.none() | codes)
        channel = data.draw(st.sampled_from(["flashcall", "voice"]))
        step_timeout_ms = data.draw(st.sampled_from([None, 60_000]))
        token = f"tok-{verification_id}-{attempt + 1}"
        deadline = self.now + CALL_LEASE_MS
        expected = model.claim(attempt, self.now, code, deadline)
        claimed, _, _ = self.run(
            self.store.begin_attempt(
                verification_id,
                expected_attempt=attempt,
                now_ms=self.now,
                step=min(attempt, 2),
                channel=channel,
                provider=PROVIDER,
                code_hash=code_hash(SECRET, verification_id, code) if code else "",
                deadline_ms=deadline,
                guard=GUARD,
                callback_token=token,
                provider_type=VoicePassword.type,
            )
        )
        assert claimed == expected
        if claimed == "ok":
            self.claims[verification_id, attempt + 1] += 1
            call = Call(verification_id, attempt + 1, channel, self.now, step_timeout_ms)
            self.calls[verification_id, attempt + 1] = call
            self.in_flight.add(call)
            self.tokens[token] = Token(verification_id, attempt + 1)

    def attempt_failed(
        self,
        verification_id: str,
        attempt: int,
        *,
        outcome: str,
        error_code: str,
        state: str,
        discard: bool,
        recovery_at: int | None = None,
    ) -> str:
        recovery_at = self.now + RECOVERY_MS if recovery_at is None else recovery_at
        expected = self.models[verification_id].fail(
            attempt, state=state, discard=discard, recovery_at=recovery_at
        )
        answer = self.run(
            self.store.attempt_failed(
                verification_id,
                attempt=attempt,
                now_ms=self.now,
                outcome=outcome,
                error_code=error_code,
                state=state,
                recovery_at_ms=recovery_at,
                discard_code=discard,
            )
        )
        assert answer == expected
        token = self.token_of(verification_id, attempt)
        if answer == "ok" and token is not None:
            token.close()
        return answer

    def on_status(
        self,
        verification_id: str,
        attempt: int,
        provider: str,
        status: dict[str, Any],
        *,
        data: st.DataObject,
    ) -> None:
        """What worker/verification/verifier.py's on_status does with a provider's status."""
        stored = self.fields(verification_id)
        current = (
            stored["status"] not in FINAL_STATUSES
            and int(stored["attempt"]) == attempt
            and stored["provider"] == provider
        )
        if not current or stored["attempt_state"] != "delivered" or status["ref"] != stored["provider_ref"]:
            self.run(
                self.store.late_status(
                    verification_id,
                    attempt=attempt,
                    provider=provider,
                    state=status["provider_state"],
                    now_ms=self.now,
                )
            )
            return
        outcome = {"busy": "busy", "no_answer": "no_answer", "provider_error": "provider_error"}.get(
            status["state"]
        )
        if outcome == "no_answer" and stored["channel"] == "flashcall":
            outcome = None  # a flash call not picked up has shown its code
        if outcome is None:
            return
        settled = self.attempt_failed(
            verification_id,
            attempt,
            outcome=outcome,
            error_code=status["provider_state"],
            state="failed",
            discard=False,
        )
        if settled == "ok":
            self.advance(verification_id, attempt, "status", data=data)

    # -- providers --------------------------------------------------------------------------

    @precondition(lambda self: self.in_flight)
    @rule(
        data=st.data(),
        answer=st.sampled_from(
            ["delivered", "delivered its own code", "refused", "no answer in time", "worker died"]
        ),
        retried=st.booleans(),
    )
    def provider_answers_a_call(self, data: st.DataObject, answer: str, retried: bool) -> None:
        """The provider's answer to a claimed call, recorded by the worker that claimed it
        (twice when redis-py retries the command)."""
        call = data.draw(st.sampled_from(sorted(self.in_flight, key=lambda c: (c.id, c.attempt))))
        self.in_flight.discard(call)
        model = self.models[call.id]
        if answer == "worker died":
            return
        if answer.startswith("delivered"):
            own_code = data.draw(codes) if answer == "delivered its own code" else None
            deadline = self.now + call.step_timeout_ms if call.step_timeout_ms else 0
            token = self.tokens[f"tok-{call.id}-{call.attempt}"]
            for _ in range(2 if retried else 1):
                live = not model.final and self.now < model.expires_at
                expected = model.deliver(call.attempt, own_code, deadline)
                before = self.statuses_queued(call.id, call.attempt)
                recorded = self.run(
                    self.store.attempt_delivered(
                        call.id,
                        attempt=call.attempt,
                        now_ms=self.now,
                        provider=PROVIDER,
                        channel=call.channel,
                        step=0,
                        ref=call_ref(call.id, call.attempt),
                        price_e4=3500,
                        code_hash=code_hash(SECRET, call.id, own_code) if own_code else "",
                        provider_checks=False,
                        step_deadline_ms=deadline,
                        latency_ms=100,
                        day=GUARD.day,
                    )
                )
                assert recorded == expected
                released = (
                    token.delivered(call_ref(call.id, call.attempt), live=live) if expected == "ok" else 0
                )
                assert self.statuses_queued(call.id, call.attempt) == before + released
            return
        refused = answer == "refused"
        settled = [
            self.attempt_failed(
                call.id,
                call.attempt,
                outcome="provider_error" if refused else "timeout",
                error_code="http_500" if refused else "timeout",
                state="failed",
                discard=refused,
            )
            for _ in range(2 if retried else 1)
        ]
        if settled[0] == "ok":
            self.route_on(call.id, call.attempt, data)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), state=st.sampled_from(POSTED_STATES), own_call=st.booleans())
    def provider_posts_a_status(self, data: st.DataObject, state: str, own_call: bool) -> None:
        """A status post, taken in as the callback receiver takes it: about the attempt's own
        call, or (a confused provider, a token posted with another call's id) about another."""
        token_name = data.draw(st.sampled_from(sorted(self.tokens)))
        token = self.tokens[token_name]
        ref = call_ref(token.id, token.attempt if own_call else token.attempt + 1)
        status = VoicePassword.parse_callback({"id": ref, "state": state, "price": "0.35"})
        message = {**asdict(status), "price": str(status.price)}
        expected = token.post(ref, state, self.models[token.id], self.now)
        before = self.statuses_queued(token.id, token.attempt)
        answer = self.run(
            self.store.accept_callback(token_name, message, ref=ref, state=state, final=True, now_ms=self.now)
        )
        assert answer == expected
        assert self.statuses_queued(token.id, token.attempt) == before + (answer == "accepted")

    # -- the clock --------------------------------------------------------------------------

    @rule(elapsed_ms=st.sampled_from([1_000, 16_000, 31_000, 61_000, 700_000]))
    def time_passes_and_timers_fire(self, elapsed_ms: int) -> None:
        self.now += elapsed_ms
        expected = 0
        for model in self.models.values():
            expected += sum(model.fire(self.now))
        assert self.run(self.store.fire_timers(now_ms=self.now, limit=100)).fired == expected

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def the_stored_state_is_what_the_contract_says(self) -> None:
        for verification_id, model in self.models.items():
            stored = self.fields(verification_id)
            assert (stored["status"], int(stored["attempt"]), stored["attempt_state"]) == (
                model.status,
                model.attempt,
                model.attempt_state,
            )
            assert (int(stored["checks"]), int(stored["delivered"])) == (model.checks, model.delivered)
            accepted = Counter(code_hash(SECRET, verification_id, code) for code in model.valid.elements())
            assert Counter(stored["codes"].split()) == accepted
            step_due = self.client.zscore(keys.PREFIX + "timers:step", verification_id)
            assert step_due == model.step_due
            armed = self.client.zscore(keys.PREFIX + "timers:expire", verification_id) is not None
            assert armed == model.expiry_armed

    @invariant()
    def a_final_status_never_changes(self) -> None:
        for verification_id in self.models:
            status = self.fields(verification_id)["status"]
            if verification_id in self.final_seen:
                assert status == self.final_seen[verification_id]
            elif status in FINAL_STATUSES:
                self.final_seen[verification_id] = status

    @invariant()
    def checks_never_exceed_the_limit(self) -> None:
        for verification_id, model in self.models.items():
            assert int(self.fields(verification_id)["checks"]) <= MAX_CHECKS
            assert self.checks_queued[verification_id] <= MAX_CHECKS
            assert len(model.compared) <= MAX_CHECKS

    @invariant()
    def nothing_approves_after_expiry_or_cancel(self) -> None:
        for verification_id in self.models:
            stored = self.fields(verification_id)
            if stored["status"] == "approved":
                assert int(stored["finished_at"]) < int(stored["expires_at"])
            names = [e["event"] for e in self.events(verification_id)]
            if "approved" in names:
                assert "canceled" not in names[: names.index("approved")]
                assert "expired" not in names[: names.index("approved")]

    @invariant()
    def a_verification_ends_at_most_once(self) -> None:
        for verification_id in self.models:
            finals = self.final_events(verification_id)
            ended = self.fields(verification_id)["status"] in FINAL_STATUSES
            assert len(finals) == int(ended), f"{verification_id}: {finals}"

    @invariant()
    def a_queued_status_is_about_its_attempts_own_call(self) -> None:
        for _, message in self.queued(keys.VERIFY_QUEUE):
            if message["actor_name"] == "call_status":
                verification_id, attempt, _, status = message["args"]
                assert status["ref"] == call_ref(verification_id, attempt)

    @invariant()
    def an_attempt_is_claimed_at_most_once(self) -> None:
        assert all(count == 1 for count in self.claims.values())
        for verification_id in self.models:
            started = Counter(
                e["attempt"] for e in self.events(verification_id) if e["event"] == "attempt_started"
            )
            assert all(count == 1 for count in started.values()), started


def test_every_interleaving_keeps_the_verification_contract(library_url: str) -> None:
    class OnTheLibrarysServer(VerificationLives):
        redis_url = library_url

    run_state_machine_as_test(OnTheLibrarysServer, settings=PROPERTIES)
