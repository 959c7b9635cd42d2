"""What operators read: `flashcall routing explain` and `flashcall breakers`.

Both read the routing state every worker shares in Redis, so they tell what the workers
would do now, from any machine with the routing file and REDIS_URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from worker.core import keys
from worker.core.verification import Channel, Verification, moscow_day
from worker.providers.registry import inspectable_provider
from worker.redis import functions
from worker.routing.config import RoutingConfig
from worker.routing.operators import operator_of
from worker.routing.select import Candidate, candidates, leading, learned, outlook, shares
from worker.routing.state import SKIP, ProviderState, RoutingState, leader_key

__all__ = ["breaker_report", "explain", "read_state", "reset_breakers"]


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
) -> str:
    """For each step of the policy, every candidate with its cost, health, breaker and money,
    and why it would be chosen or is dropped, for a first attempt made now."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    chosen_policy = config.policies[policy]
    providers = {
        name: inspectable_provider(name, entry) for name, entry in config.providers.items() if entry.enabled
    }
    verification = Verification(
        id="explain",
        phone=phone,
        policy=policy,
        channels=tuple(channels),
        code_length=code_length,
    )
    operator = operator_of(phone, config.operators)
    learning = config.learning if chosen_policy.learning else None
    ranking = (
        f"learned: expected roubles per approved verification, exploring {learning.explore:.0%}"
        if learning
        else "static: cost adjusted by health"
    )
    lines = [
        f"routing for +{phone[:4]}*****{phone[-2:]} ({operator}), policy {policy}, {code_length}-digit code;",
        f"ranking {ranking}:",
    ]
    steps = chosen_policy.steps_for(verification.channels)
    for index, step in enumerate(steps):
        timeout = f"{step.timeout:g}s" if step.timeout else "until the verification expires"
        lines.append("")
        lines.append(f"step {index}: {step.channel}, waits {timeout}")
        ranked = candidates(config, providers, verification, step, state=state, now_ms=now, operator=operator)
        if not ranked:
            lines.append("  no provider offers this channel")
            continue
        verdicts: dict[str, str]
        if learning is None:
            split = shares(config, ranked)
            verdicts = {
                name: "chosen: the lowest score"
                if share == 1
                else f"chosen for {share:.0%} of attempts, by weight"
                for name, share in split.items()
            }
        else:
            after = outlook(
                config,
                learning,
                providers,
                verification,
                steps[index + 1 :],
                operator=operator,
                state=state,
                now_ms=now,
            )
            ranked = learned(
                learning,
                ranked,
                policy,
                step.channel,
                operator,
                state=state,
                after=after,
                latency_cost=config.health.latency_cost,
            )
            key = leader_key(policy, step.channel, operator)
            choice, lead = leading(learning, key, ranked, after, state)
            leader = state.leaders.get(key)
            why = (
                "the lowest cost per approval" if lead or choice != leader else "leads, within the hysteresis"
            )
            verdicts = {choice: f"chosen: {why}"} if choice else {}
            if choice == SKIP:
                lines.append(
                    f"  skipped: going straight on costs {after.per_approval:.4f} per approval, "
                    "less than any candidate here (explored still)"
                )
        score = "score" if learning is None else "per approval"
        rows = [["", "provider", "cost", score, "health", "conversion", "breaker", "money", "verdict"]]
        for candidate in ranked:
            current = state.of(candidate.name)
            if candidate.name in verdicts:
                verdict, mark = verdicts[candidate.name], "->"
            elif candidate.dropped is None:
                verdict, mark = ("explored only" if SKIP in verdicts else "next if the one above fails"), ""
            else:
                verdict, mark = f"dropped: {candidate.dropped}", ""
            breaker = current.breaker + (f" ({current.failures} failures)" if current.failures else "")
            rows.append(
                [
                    mark,
                    candidate.name,
                    str(candidate.cost),
                    f"{candidate.score:.4f}",
                    _health(candidate),
                    _conversion(candidate, learning.min_samples if learning else 0),
                    breaker,
                    _money(current, config.providers[candidate.name].daily_budget),
                    verdict,
                ]
            )
        if learning is None:
            for row in rows:
                del row[5]
        lines.extend("  " + line for line in _table(rows))
    return "\n".join(lines)


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
