"""One wrapper per function of the flashcall library (flashcall.lua beside this module).

A function's name and the order of its arguments are written here and nowhere else:
each wrapper builds a `Call` (the name, the arguments in the library's order, and how
to read the answer), which runs on a synchronous client, an asyncio one, or a pipeline.
Arguments are keyword-only wherever two of the same type sit side by side, so that no
caller can swap them. tests/unit/test_functions.py holds this list to the library's and
keeps FCALL out of every other module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Literal, NamedTuple, TypeVar, cast

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from worker.core import keys

__all__ = [
    "AdmissionGuard",
    "AskProvider",
    "Call",
    "CallbackAnswer",
    "CallbackTarget",
    "Claim",
    "GuardChange",
    "HeldRange",
    "PublishedConfig",
    "TimerPass",
    "admission",
    "apply_check",
    "attempt_delivered",
    "attempt_failed",
    "begin_attempt",
    "breaker_fail",
    "breaker_reset",
    "breaker_set",
    "callback_accept",
    "callback_target",
    "cancel",
    "check",
    "drain_metrics",
    "fire_timers",
    "fraud_list",
    "fraud_release",
    "fraud_report",
    "give_up",
    "late_status",
    "learning_state",
    "provider_balance",
    "publish_config",
    "queue_stats",
    "reply_key_of",
    "routing_state",
    "schedule_poll",
    "start",
    "status",
    "version",
]

T = TypeVar("T")

Argument = str | int


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One FCALL of the library, ready to send."""

    name: str
    args: tuple[Argument, ...]
    parse: Callable[[Any], T] = field(repr=False, compare=False)
    """Reads the answer Redis gave (str or bytes, as the client decodes) into its type."""

    def send(self, client: redis.Redis) -> Any:
        """The answer as Redis gave it, unread (what tests of the library's wire form compare)."""
        return client.fcall(self.name, 0, *self.args)

    def run(self, client: redis.Redis) -> T:
        return self.parse(self.send(client))

    def run_read_only(self, client: redis.Redis) -> T:
        """As FCALL_RO, which a replica runs too; Redis refuses it for a function that writes."""
        return self.parse(client.fcall_ro(self.name, 0, *self.args))

    async def run_async(self, client: redis.asyncio.Redis) -> T:
        return self.parse(await client.fcall(self.name, 0, *self.args))

    async def run_then_pop(
        self, client: redis.asyncio.Redis, key: str, timeout: float
    ) -> tuple[T, str | None]:
        """The call, then `BLPOP key timeout`, sent in one write: the answer, and what the
        BLPOP popped within `timeout` (None if nothing). For a call that names the key it
        answers on (a check with a `reply` token).

        redis-py's pipeline reads every reply before it returns, so a refused call would wait
        out the BLPOP; here the call's reply is read first, and any error drops the
        connection, which ends the BLPOP Redis holds for it."""
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(
                connection.pack_commands([("FCALL", self.name, 0, *self.args), ("BLPOP", key, timeout)])
            )
            answer = await connection.read_response()
            popped = await connection.read_response()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        return self.parse(answer), None if popped is None else str(popped[1])

    def queue(self, pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline) -> None:
        """Add the call to a pipeline: its answer is among the pipeline's, for `parse`."""
        pipe.fcall(self.name, 0, *self.args)


def _text(answer: Any) -> str:
    return answer.decode() if isinstance(answer, bytes) else str(answer)


def _int(answer: Any) -> int:
    return int(answer)


def _ok(answer: Any) -> bool:
    return _text(answer) == "ok"


def _document(answer: Any) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(answer))


def _flag(value: bool) -> str:
    return "1" if value else "0"


# --- the producer contract (docs/protocol.md) ----------------------------------------------


def start(request_json: str, *, via: str | None = None) -> Call[dict[str, Any]]:
    """Start a verification; `request_json` is the request object of docs/protocol.md.

    `via` is the HTTP API's JSON object of what came beside the body: `id` (its
    Idempotency-Key header) and `api_key` (the name of the key it was sent with)."""
    return Call("flashcall_start", (request_json,) if via is None else (request_json, via), _document)


def admission(request_json: str) -> Call[dict[str, Any]]:
    """What `start` would answer a new verification of this request now, from the same code
    and without starting it or counting anything: `{"admitted": true}`, or its refusal
    (`status` failed, `reason` blocked, fraud_suspected or rate_limited, `limit`,
    `retry_after`). A read-only function: FCALL_RO runs it too."""
    return Call("flashcall_admission", (request_json,), _document)


def check(request_json: str, *, via: str | None = None) -> Call[str]:
    """Check a typed code (`{"id": ..., "code": ...}`): the reply key its answer is pushed on.

    `via` is the HTTP API's `{"id": ..., "reply": ...}`: the id of the URL, which stands for
    the body's, and a token of 16 to 64 letters and digits that names the reply key
    (`reply_key_of`), so that the API can wait on it in the same round trip."""
    return Call("flashcall_check", (request_json,) if via is None else (request_json, via), _text)


def reply_key_of(token: str) -> str:
    """The reply key a check whose `via` carries `reply: token` answers on."""
    return f"{keys.PREFIX}reply:api:{token}"


def status(verification_id: str) -> Call[dict[str, Any]]:
    return Call("flashcall_status", (verification_id,), _document)


def cancel(verification_id: str) -> Call[dict[str, Any]]:
    return Call("flashcall_cancel", (verification_id,), _document)


def version() -> Call[str]:
    return Call("flashcall_version", (), _text)


# --- attempts -----------------------------------------------------------------------------


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


class Claim(NamedTuple):
    """flashcall_begin_attempt's answer."""

    result: str
    """'ok', or why not: 'final', 'stale', 'in_flight', 'not_found', 'fraud_suspected' (the
    conversion guard holds the number's range), or the provider's refusal 'breaker_open',
    'no_money', 'budget_spent'."""
    admission: str
    """With 'ok': 'closed', 'probe' or 'trial' (see the breaker); '' otherwise."""
    demoted: bool
    """Whether this attempt's `lead` demoted the previous leading choice."""


def _claim(answer: Any) -> Claim:
    words = [_text(word) for word in answer]
    return Claim(words[0], words[1] if len(words) > 1 else "", len(words) > 2)


def begin_attempt(
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
) -> Call[Claim]:
    """Claim attempt `expected_attempt` + 1 if the provider admits a call.

    `learn` ('<memory>:<half-life ms>:<recent memory>', empty when routing does not learn)
    and `operator` say where the attempt's outcome is learned; `lead` (key, previous, new)
    moves the leading choice of learned routing."""
    return Call(
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
            *(lead or ()),
        ),
        _claim,
    )


def attempt_delivered(
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
) -> Call[str]:
    """Record a delivery: 'ok', 'late', 'duplicate' or 'not_found'; `poll_at_ms` schedules
    the first status poll (0: none)."""
    return Call(
        "flashcall_attempt_delivered",
        (
            verification_id,
            attempt,
            now_ms,
            provider,
            channel,
            step,
            ref,
            price_e4,
            code_hash,
            _flag(provider_checks),
            step_deadline_ms,
            latency_ms,
            day,
            poll_at_ms,
        ),
        _text,
    )


def attempt_failed(
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
) -> Call[str]:
    """Settle the attempt as failed (`state` 'failed') or timed out ('timed_out'): 'ok',
    'stale' or 'not_found'. `discard_code` when the provider surely placed no call;
    `latency_ms` (-1 for a step that timed out later) when the provider answered, which
    then counts in its health (as its own fault when `provider_fault`), and `no_money_ms`
    how long an outcome of not_enough_money keeps it out of rotation."""
    return Call(
        "flashcall_attempt_failed",
        (
            verification_id,
            attempt,
            now_ms,
            outcome,
            error_code,
            state,
            recovery_at_ms,
            _flag(discard_code),
            _flag(provider_fault),
            latency_ms,
            no_money_ms,
        ),
        _text,
    )


def give_up(verification_id: str, *, attempt: int, now_ms: int, reason: str, hard: bool) -> Call[str]:
    """'failed', 'waiting' (a code was delivered: wait for the user until expiry), or why not."""
    return Call("flashcall_give_up", (verification_id, attempt, now_ms, reason, _flag(hard)), _text)


class AskProvider(NamedTuple):
    """flashcall_apply_check's answer when only the provider that keeps the code can judge
    it (Telphin): which provider, about which number. Nothing was answered or changed."""

    provider: str
    """'' (and no phone) from a library before version 13, which does not name them."""
    phone: str


def _check_answer(answer: Any) -> str | AskProvider:
    text = _text(answer)
    if text == "ask_provider":
        return AskProvider("", "")
    if text.startswith("ask_provider "):
        _, provider, phone = text.split(" ")
        return AskProvider(provider, phone)
    return text


def apply_check(verification_id: str, *, proof: str, reply_key: str, now_ms: int) -> Call[str | AskProvider]:
    """Answer a check on its reply key; `proof` is a verdict or the typed code's hashes
    (worker/verification/checks.py). The result answered, or AskProvider when only the
    provider can judge the hashes' code."""
    return Call("flashcall_apply_check", (verification_id, proof, reply_key, now_ms, "named"), _check_answer)


class TimerPass(NamedTuple):
    """flashcall_fire_timers's answer."""

    fired: int
    next_due_ms: int | None
    """When the next timer of any kind falls due, None when none waits; at or before the
    pass's `now_ms` when `limit` timers fired and more are due."""


def _timer_pass(answer: Any) -> TimerPass:
    fired, next_due = answer
    return TimerPass(int(fired), None if next_due is None else int(next_due))


def fire_timers(*, now_ms: int, limit: int) -> Call[TimerPass]:
    """Act on the step, poll and expiry timers due at `now_ms`, at most `limit` of each kind."""
    return Call("flashcall_fire_timers", (now_ms, limit), _timer_pass)


def schedule_poll(verification_id: str, *, attempt: int, due_ms: int) -> Call[bool]:
    """The next status poll of a delivered attempt; False when the attempt is no longer current."""
    return Call("flashcall_schedule_poll", (verification_id, attempt, due_ms), _ok)


def late_status(verification_id: str, *, attempt: int, provider: str, state: str, now_ms: int) -> Call[str]:
    """Keep a status that came after its attempt was settled: 'recorded' or 'not_found'."""
    return Call("flashcall_late_status", (verification_id, attempt, provider, state, now_ms), _text)


# --- callbacks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """The attempt a callback token stands for."""

    id: str
    attempt: int
    provider: str
    type: str


CallbackAnswer = Literal["accepted", "repeat", "held", "mismatch", "closed", "busy", "unknown"]
"""What flashcall_callback_accept made of a status post (worker/redis/flashcall.lua says each)."""


def _target(answer: Any) -> CallbackTarget | None:
    return CallbackTarget(**json.loads(answer)) if answer else None


def _callback_answer(answer: Any) -> CallbackAnswer:
    return cast(CallbackAnswer, _text(answer))


def callback_target(token: str) -> Call[CallbackTarget | None]:
    """The attempt a callback token was issued for, or None for a token never issued."""
    return Call("flashcall_callback_target", (token,), _target)


def callback_accept(
    token: str, status: Mapping[str, Any], *, ref: str, state: str, final: bool, now_ms: int
) -> Call[CallbackAnswer]:
    """Take a parsed status of the call `ref` in for the token's attempt; `state` is the
    provider's own name for it, `final` whether it settles the call."""
    return Call(
        "flashcall_callback_accept",
        (token, json.dumps(status), now_ms, ref, state, _flag(final)),
        _callback_answer,
    )


# --- configuration, metrics and queues ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishedConfig:
    policies: tuple[str, ...]
    per_phone: tuple[tuple[int, int], ...]
    """(limit, per milliseconds) for each per-number window."""
    keyed: Mapping[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    """The other limits (per_ip, per_range, ...: routing.yaml's names), each as per_phone."""
    operators: Mapping[str, str] = field(default_factory=dict)
    """The operator of every number range by prefix, the longest prefix deciding."""
    lists: Mapping[str, str] = field(default_factory=dict)
    """Number prefixes on the fraud lists: 'safe' or 'blocked', the longest prefix deciding."""
    guard: Mapping[str, float] | None = None
    """The conversion guard's settings (window, history, hold and max_hold in ms), or None."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "policies": list(self.policies),
                "per_phone": [list(rule) for rule in self.per_phone],
                "keyed": {name: [list(rule) for rule in rules] for name, rules in self.keyed.items()},
                "operators": dict(self.operators),
                "lists": dict(self.lists),
                **({"guard": dict(self.guard)} if self.guard else {}),
            }
        )


def publish_config(config: PublishedConfig) -> Call[str]:
    """Tell flashcall_start which policies exist and which per-number limits hold."""
    return Call("flashcall_publish_config", (config.to_json(),), _text)


def _pairs(answer: Any) -> dict[str, str]:
    flat = [_text(item) for item in answer]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def drain_metrics() -> Call[dict[str, str]]:
    """The library's counts since the last drain (each taken by one caller only)."""
    return Call("flashcall_drain_metrics", (), _pairs)


def queue_stats(*, now_ms: int | None = None) -> Call[dict[str, Any]]:
    """{"queued": {queue: n}, "dead": {queue: n}, "timers": {kind: n}, "backlog": {queue: n}};
    the backlog counts step and poll timers due at `now_ms` (Redis's clock when None)."""
    return Call("flashcall_queue_stats", () if now_ms is None else (now_ms,), _document)


# --- breakers and routing state -----------------------------------------------------------


def breaker_fail(provider: str, *, fail_max: int, now_ms: int) -> Call[int]:
    """Count a failure of a closed breaker, opening it at `fail_max`: the failures counted."""
    return Call("flashcall_breaker_fail", (provider, fail_max, now_ms), _int)


def breaker_set(provider: str, state: str, *, now_ms: int) -> Call[str]:
    """Put the provider's breaker in pybreaker's `state`."""
    return Call("flashcall_breaker_set", (provider, state, now_ms), _text)


def breaker_reset(providers: Sequence[str]) -> Call[int]:
    """Close the breakers and clear the out-of-money marks of these providers: how many."""
    return Call("flashcall_breaker_reset", tuple(providers), _int)


class HeldRange(NamedTuple):
    """A number range the conversion guard holds."""

    range: str
    until_ms: int
    level: int
    """How many times it was held within the guard's history, this hold included."""


def _held(answer: Any) -> list[HeldRange]:
    return [HeldRange(str(r), int(until), int(level)) for r, until, level in json.loads(_text(answer))]


def fraud_list(*, now_ms: int) -> Call[list[HeldRange]]:
    """The ranges held at `now_ms`, soonest released first (those run out are released)."""
    return Call("flashcall_fraud_list", (now_ms,), _held)


class GuardChange(NamedTuple):
    """A hold or a release of a number range by the conversion guard."""

    kind: Literal["held", "released"]
    range: str
    until_ms: int = 0
    """Held: when the hold ends."""
    level: int = 0
    """Held: the holds within the guard's history, this one included."""
    reason: str = ""
    """Released: 'expired' or 'operator'."""


def _changes(answer: Any) -> list[GuardChange]:
    changes = []
    for entry in answer:
        kind, number_range, *rest = _text(entry).split(" ")
        if kind == "held":
            changes.append(GuardChange("held", number_range, until_ms=int(rest[0]), level=int(rest[1])))
        else:
            changes.append(GuardChange("released", number_range, reason=rest[0]))
    return changes


def fraud_report(*, now_ms: int) -> Call[list[GuardChange]]:
    """A reporter's round: release the holds run out, and take the holds and releases since
    the last round (each is handed to one caller only)."""
    return Call("flashcall_fraud_report", (now_ms,), _changes)


def fraud_release(number_range: str, *, now_ms: int) -> Call[str]:
    """Release a held range at once: 'released', or 'not_held'."""
    return Call("flashcall_fraud_release", (number_range, now_ms), _text)


def provider_balance(provider: str, *, balance: Decimal, now_ms: int) -> Call[str]:
    """A balance read from the provider: above zero, a provider out of money is back."""
    return Call("flashcall_provider_balance", (provider, str(balance), now_ms), _text)


def routing_state(*, now_ms: int, window_ms: int, day: str, providers: Sequence[str]) -> Call[dict[str, Any]]:
    """Breakers, money, spend on `day` and health over the window of these providers. It
    keeps running sums of health up to date as it reads them, so it is no FCALL_RO."""
    return Call("flashcall_routing_state", (now_ms, window_ms, day, *providers), _document)


def learning_state(providers: Sequence[str]) -> Call[dict[str, Any]]:
    """Learned conversion per provider and the leading choices."""
    return Call("flashcall_learning_state", tuple(providers), _document)
