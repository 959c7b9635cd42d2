"""What operators read: `flashcall routing explain` and `flashcall breakers`.

Both read the routing state every worker shares in Redis, so they tell what the workers
would do now, from any machine with the routing file and REDIS_URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from worker import keys
from worker.providers import inspectable_provider
from worker.providers.base import Channel
from worker.routing.config import RoutingConfig
from worker.routing.select import Candidate, candidates, shares
from worker.routing.state import ProviderState, RoutingState
from worker.store import Verification
from worker.verifier import moscow_day

__all__ = ["breaker_report", "explain", "read_state", "reset_breakers"]


def read_state(client: redis.Redis, config: RoutingConfig, *, now_ms: int) -> RoutingState:
    raw = client.fcall(
        "flashcall_routing_state",
        0,
        now_ms,
        int(config.health.window * 1000),
        moscow_day(now_ms),
        *sorted(config.providers),
    )
    return RoutingState.from_json(json.loads(cast(str, raw)))


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
        status="pending",
        attempt=0,
        attempt_state="",
        step=None,
        channel="",
        provider="",
        tried=(),
        reason="",
        delivered=0,
    )
    lines = [f"routing for +{phone[:4]}*****{phone[-2:]}, policy {policy}, {code_length}-digit code:"]
    for index, step in enumerate(chosen_policy.steps_for(verification.channels)):
        timeout = f"{step.timeout:g}s" if step.timeout else "until the verification expires"
        lines.append("")
        lines.append(f"step {index}: {step.channel}, waits {timeout}")
        ranked = candidates(config, providers, verification, step, state=state, now_ms=now)
        if not ranked:
            lines.append("  no provider offers this channel")
            continue
        rows = [["", "provider", "cost", "score", "health", "breaker", "money", "verdict"]]
        split = shares(config, ranked)
        for candidate in ranked:
            current = state.of(candidate.name)
            share = split.get(candidate.name)
            if share == 1:
                verdict, mark = "chosen: the lowest score", "->"
            elif share is not None:
                verdict, mark = f"chosen for {share:.0%} of attempts, by weight", "->"
            elif candidate.dropped is None:
                verdict, mark = "next if the one above fails", ""
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
                    breaker,
                    _money(current, config.providers[candidate.name].daily_budget),
                    verdict,
                ]
            )
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
    return int(cast(int, client.fcall("flashcall_breaker_reset", 0, *names)))
