"""What operators read: `flashcall routing explain` and `flashcall breakers`.

Both read the routing state every worker shares in Redis, so they tell what the workers
would do now, from any machine with the routing file and REDIS_URL. An explanation is made
by the code that decides: the library's admission of a start (flashcall_admission, the
checks flashcall_start makes, without their writes), then the worker's `decide`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.core import keys
from worker.core.phone import mask
from worker.core.verification import Channel, Verification, moscow_day
from worker.providers.registry import inspectable_provider
from worker.redis import functions
from worker.routing.config import LearningConfig, RoutingConfig
from worker.routing.operators import operator_of
from worker.routing.select import Candidate, Choice, Decision, GiveUp, StepReview, Why, decide
from worker.routing.state import SKIP, ProviderState, RoutingState

__all__ = [
    "Refusal",
    "breaker_report",
    "explain",
    "explain_verification",
    "read_admission",
    "read_state",
    "reset_breakers",
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why flashcall_start refuses a new verification of a number before any routing."""

    reason: str
    """blocked, fraud_suspected or rate_limited."""
    limit: str | None = None
    """The limit reached (per_phone, per_ip, ...), for rate_limited."""
    retry_after: int | None = None
    """Seconds until a start is admitted again, for limits and holds."""


def read_admission(
    client: redis.Redis,
    *,
    phone: str,
    policy: str = "default",
    client_ip: str | None = None,
    limit_key: str | None = None,
) -> Refusal | None:
    """What flashcall_start would answer a start of this number now: None when it takes it.

    Read only (FCALL_RO): nothing is counted, no hold made or released."""
    request: dict[str, str] = {"id": "explain", "phone": phone, "policy": policy}
    if client_ip is not None:
        request["client_ip"] = client_ip
    if limit_key is not None:
        request["limit_key"] = limit_key
    answer = functions.admission(json.dumps(request)).run_read_only(client)
    if answer.get("admitted"):
        return None
    return Refusal(str(answer["reason"]), answer.get("limit"), answer.get("retry_after"))


def read_state(client: redis.Redis, config: RoutingConfig, *, now_ms: int) -> RoutingState:
    raw = functions.routing_state(
        now_ms=now_ms,
        window_ms=int(config.health.window * 1000),
        day=moscow_day(now_ms),
        providers=sorted(config.providers),
    ).run(client)
    if config.learning is None:
        return RoutingState.from_json(raw)
    learning = functions.learning_state(sorted(config.providers)).run(client)
    return RoutingState.from_json(raw, learning, now_ms=now_ms, half_life_s=config.learning.half_life)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _health(candidate: Candidate) -> str:
    h = candidate.health
    if not h.samples:
        return "no data"
    return f"{h.delivered}/{h.samples} ok, {h.mean_latency:.2f}s"


def _conversion(candidate: Candidate, min_samples: int) -> str:
    found = candidate.estimate
    if found is None:
        return ""
    seen = found.observed
    if found.own:
        waited = seen.seconds_to_approval
        approval = f", approved in {waited:.0f}s" if waited is not None else ""
        return f"{found.rate:.0%} of {seen.trials:.0f} attempts{approval}"
    return f"judged on price until observed ({seen.trials:.0f} of {min_samples} attempts)"


def _money(state: ProviderState, budget: Any) -> str:
    parts = []
    if state.balance is not None:
        parts.append(f"balance {state.balance}")
    parts.append(f"spent {state.spent_today:.2f}" + (f" of {budget}" if budget is not None else ""))
    return ", ".join(parts)


def explain(
    config: RoutingConfig,
    state: RoutingState,
    *,
    phone: str,
    policy: str = "default",
    channels: Iterable[Channel] = (),
    code_length: int = 4,
    now_ms: int | None = None,
    refusal: Refusal | None = None,
) -> str:
    """What a start made now would do: refused as `refusal` says (read_admission's answer),
    or its first attempt as worker/routing/select.py decides it, each step with every
    candidate's cost, health, breaker and money, and why it is chosen or dropped."""
    verification = Verification(
        id="explain",
        phone=phone,
        policy=policy,
        channels=tuple(channels),
        code_length=code_length,
    )
    if refusal is not None:
        operator = operator_of(phone, config.operators)
        header = f"routing for {mask(phone)} ({operator}), policy {policy}, {code_length}-digit code;"
        return "\n".join([header, "", _render_refusal(refusal, phone)])
    return explain_verification(
        config, state, verification, now_ms=int(time.time() * 1000) if now_ms is None else now_ms
    )


def explain_verification(
    config: RoutingConfig, state: RoutingState, verification: Verification, *, now_ms: int
) -> str:
    """The next attempt of this verification as `decide` makes it, rendered: the steps it
    weighed up to its choice (or its refusal), then the later steps as they would choose
    if reached now."""
    providers = {
        name: inspectable_provider(name, entry) for name, entry in config.providers.items() if entry.enabled
    }
    decision = decide(
        config,
        config.policies[verification.policy],
        providers,
        verification,
        state=state,
        now_ms=now_ms,
        look_ahead=True,
    )
    return "\n".join(_render(config, state, verification, decision))


def _render(config: RoutingConfig, state: RoutingState, v: Verification, decision: Decision) -> list[str]:
    after = f", after {v.attempt} attempts" if v.attempt else ""
    lines = [
        f"routing for {mask(v.phone)} ({decision.operator}), policy {v.policy}, "
        f"{v.code_length}-digit code{after};"
    ]
    if decision.steps:
        learning = decision.learning
        ranking = (
            f"learned: expected roubles per approved verification, exploring {learning.explore:.0%}"
            if learning
            else "static: cost adjusted by health"
        )
        lines.append(f"ranking {ranking}:")
    for review in decision.steps:
        lines.append("")
        lines.extend(_render_step(config, state, review, decision.learning))
    lines.append("")
    lines.append(_render_outcome(decision.outcome, v))
    return lines


def _render_step(
    config: RoutingConfig, state: RoutingState, review: StepReview, learning: LearningConfig | None
) -> list[str]:
    step = review.step
    timeout = f"{step.timeout:g}s" if step.timeout else "until the verification expires"
    later = "" if review.reached else "; if reached later, as it would choose now"
    lines = [f"step {review.index}: {step.channel}, waits {timeout}{later}"]
    if not review.ranked:
        return [*lines, "  no provider offers this channel"]
    if review.leading == SKIP and review.after is not None:
        explores = "" if review.pick == SKIP else "; this attempt explores"
        lines.append(
            f"  skipped: going straight on costs {review.after.per_approval:.4f} per approval, "
            f"less than any candidate here (explored still){explores}"
        )
    score = "score" if learning is None else "per approval"
    rows = [["", "provider", "cost", score, "health", "conversion", "breaker", "money", "verdict"]]
    for candidate in review.ranked:
        current = state.of(candidate.name)
        breaker = current.breaker + (f" ({current.failures} failures)" if current.failures else "")
        rows.append(
            [
                "->" if candidate.name == review.pick else "",
                candidate.name,
                str(candidate.cost),
                f"{candidate.score:.4f}",
                _health(candidate),
                _conversion(candidate, learning.min_samples if learning else 0),
                breaker,
                _money(current, config.providers[candidate.name].daily_budget),
                _verdict(review, candidate, learning),
            ]
        )
    if learning is None:
        for row in rows:
            del row[5]
    return [*lines, *("  " + line for line in _table(rows))]


_CHOSEN: dict[Why, str] = {
    "lowest_score": "chosen: the lowest score",
    "lowest_per_approval": "chosen: the lowest cost per approval",
    "leads": "chosen: leads, within the hysteresis",
}


def _verdict(review: StepReview, candidate: Candidate, learning: LearningConfig | None) -> str:
    share = review.shares.get(candidate.name)
    if candidate.name == review.pick:
        if review.why == "weight" and share is not None:
            return f"chosen for {share:.0%} of attempts, by weight"
        if review.why == "explored" and learning is not None:
            return f"chosen: this attempt is one of the {learning.explore:.0%} that explore"
        return _CHOSEN.get(review.why, "chosen")
    if candidate.dropped is not None:
        return f"dropped: {candidate.dropped}"
    if share is not None and review.why == "weight":
        return f"takes {share:.0%} of attempts, by weight"
    if candidate.name == review.leading:
        return "leads; this attempt explores another"
    return "explored only" if review.leading == SKIP else "next if the one above fails"


#: Why a verification makes no further attempt, by the reason `decide` gives, where the
#: reason alone tells.
_GIVE_UPS = {
    "max_attempts_reached": "the policy's max_attempts are spent",
    "breaker_open": "the candidates left have their breakers open, and the policy does not fall back on it",
    "no_provider": "no step has a provider that can take the attempt",
}


def _render_outcome(outcome: Choice | GiveUp, v: Verification) -> str:
    if isinstance(outcome, Choice):
        return f"next attempt: {outcome.provider.name}, by {outcome.step.channel} (step {outcome.step_index})"
    if outcome.reason == "bad_number" and v.attempt == 0:
        why = "not an assigned Russian number (+7 covers Kazakhstan too): no provider is called"
    elif outcome.hard:
        why = f"the last attempt ended {outcome.reason}, and the policy does not fall back on it"
    else:
        why = _GIVE_UPS.get(outcome.reason, f"no provider is left to try after {outcome.reason}")
    waits = not outcome.hard and v.delivered > 0
    ends = "it waits for the code delivered earlier" if waits else "the verification fails"
    return f"{'refused' if outcome.hard else 'gives up'}: {outcome.reason}: {why}; {ends}"


def _render_refusal(refusal: Refusal, phone: str) -> str:
    """flashcall_start's refusal, as _render_outcome renders the worker's."""
    wait = f"{refusal.retry_after} s" if refusal.retry_after is not None else "a while"
    if refusal.reason == "blocked":
        why = "the number is on the routing file's fraud.blocked list"
    elif refusal.reason == "rate_limited":
        why = f"the {refusal.limit} limit is reached: a start is admitted again in {wait}"
    elif refusal.reason == "fraud_suspected":
        why = (
            f"the conversion guard holds the range {phone[:-4]} (or would, at this start) for {wait} "
            "(flashcall fraud release ends a hold)"
        )
    else:
        why = "flashcall_start refuses it"
    return f"refused: {refusal.reason}: {why}; no provider is called, the start fails at once"


def breaker_report(client: redis.Redis, config: RoutingConfig, *, now_ms: int | None = None) -> str:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    state = read_state(client, config, now_ms=now)
    rows = [["provider", "state", "failures", "opened", "trial", "money"]]
    for name in sorted(config.providers):
        current = state.of(name)
        settings = config.providers[name].breaker
        opened = ""
        if current.opened_at_ms:
            ago = (now - current.opened_at_ms) / 1000
            due = max(0.0, settings.reset_timeout - ago)
            opened = f"{ago:.0f}s ago" + (f", trial in {due:.0f}s" if current.breaker == "open" else "")
        trial = cast(str | None, client.get(keys.breaker(name) + ":trial")) or ""
        rows.append(
            [
                name,
                current.breaker,
                f"{current.failures}/{settings.fail_max}",
                opened,
                trial,
                "out of money" if current.out_of_money else "",
            ]
        )
    return "\n".join(_table(rows))


def reset_breakers(client: redis.Redis, names: Sequence[str]) -> int:
    """Close the breakers and clear the out-of-money marks of these providers."""
    return functions.breaker_reset(names).run(client)
