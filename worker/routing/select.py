"""Which provider makes the next attempt of a verification, or why there is none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from worker.providers.base import Provider
from worker.routing.config import Policy, RoutingConfig, Step
from worker.store import Verification

__all__ = ["Choice", "GiveUp", "next_attempt"]


@dataclass(frozen=True, slots=True)
class Choice:
    step_index: int
    step: Step
    provider: Provider
    cost: Decimal
    """The configured price of this attempt, for providers that do not report one."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str
    hard: bool
    """Fail even if a code was delivered earlier (the number itself is bad)."""


def next_attempt(
    config: RoutingConfig, policy: Policy, providers: Mapping[str, Provider], verification: Verification
) -> Choice | GiveUp:
    """The next attempt after the verification's last one settled (or before its first).

    A failed attempt moves on to the next provider for the same channel, then to the next
    step; a delivered attempt that timed out moves on to the next step. Within a step no
    provider is tried twice. Candidates are ranked by cost, then by name, so that equal
    costs always break the same way.
    """
    v = verification
    steps = policy.steps_for(v.channels)
    if v.attempt_state == "failed" and v.reason not in policy.fallback_on:
        return GiveUp(v.reason, hard=True)
    if v.attempt >= policy.max_attempts:
        return GiveUp("max_attempts_reached", hard=False)
    first_step, tried = 0, frozenset[str]()
    if v.attempt_state == "failed" and v.step is not None:
        first_step, tried = v.step, frozenset(v.tried)
    elif v.attempt_state == "timed_out" and v.step is not None:
        if "timeout" not in policy.fallback_on:
            return GiveUp("timeout", hard=False)
        first_step = v.step + 1

    for index in range(first_step, len(steps)):
        step = steps[index]
        names = step.providers if step.providers is not None else tuple(config.providers)
        candidates = []
        for name in names:
            settings = config.providers[name]
            offer = settings.channels.get(step.channel)
            provider = providers.get(name)
            if (
                offer is None
                or provider is None
                or not settings.enabled
                or name in tried
                or not provider.supports(step.channel, v.code_length, v.refs.get(name))
            ):
                continue
            candidates.append((offer.cost, name, provider))
        if candidates:
            cost, _, best = min(candidates, key=lambda candidate: (candidate[0], candidate[1]))
            return Choice(index, step, best, cost)
        tried = frozenset()
    return GiveUp(v.reason or "no_provider", hard=False)
