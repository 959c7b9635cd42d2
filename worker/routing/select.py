"""Which provider makes the next attempt of a verification, or why there is none.

For each step, the candidates are the providers that offer its channel for this number;
those disabled, already tried in this step, unable to serve the request, with an open
breaker, out of money or over their daily budget are dropped, each with its reason; the
rest are ranked by cost adjusted by health: the price of a delivered attempt (cost over
the recent success rate) plus what the provider's mean latency is worth. The best takes
the attempt; where weights are set, the providers scoring within 5% of the best share
attempts by weight instead. `routing explain` prints the same
candidates, reasons included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from worker.providers.base import Channel, Provider
from worker.routing.config import Policy, RoutingConfig, Step
from worker.routing.state import ChannelHealth, RoutingState
from worker.store import Verification

__all__ = ["WEIGHT_BAND", "Candidate", "Choice", "GiveUp", "candidates", "next_attempt", "shares"]


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    cost: Decimal
    score: Decimal
    """Cost adjusted by health: what ranks candidates, lowest first."""
    health: ChannelHealth
    dropped: str | None = None
    """Why this provider cannot take the attempt now; None when it can."""


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


def candidates(
    config: RoutingConfig,
    providers: Mapping[str, Provider],
    verification: Verification,
    step: Step,
    *,
    state: RoutingState,
    now_ms: int,
    tried: frozenset[str] = frozenset(),
    refused: Mapping[str, str] | None = None,
) -> list[Candidate]:
    """Every provider offering the step's channel, best first; those that cannot take the
    attempt last, with why. `refused` holds providers that just refused this attempt."""
    v = verification
    ranked: list[Candidate] = []
    names = step.providers if step.providers is not None else tuple(config.providers)
    for name in names:
        settings = config.providers[name]
        offer = settings.channels.get(step.channel)
        if offer is None:
            continue
        provider = providers.get(name)
        current = state.of(name)
        health = current.health.get(step.channel, ChannelHealth())
        dropped: str | None = None
        if not settings.enabled or provider is None:
            dropped = "disabled"
        elif not settings.serves(v.phone):
            dropped = "does not serve this number's prefix"
        elif name in tried:
            dropped = "already tried in this step"
        elif not provider.supports(step.channel, v.code_length, v.refs.get(name)):
            dropped = (
                "no earlier call of this verification through it, whose code an SMS would re-send"
                if step.channel is Channel.SMS and provider.supports(step.channel, v.code_length, "earlier")
                else f"cannot deliver a {v.code_length}-digit code by {step.channel}"
            )
        elif refused and name in refused:
            dropped = refused[name].replace("_", " ")
        elif current.breaker_open(now_ms, settings.breaker.reset_timeout):
            dropped = "breaker open"
        elif current.out_of_money:
            dropped = "out of money until its balance is seen again"
        elif current.balance is not None and current.balance < offer.cost:
            dropped = f"balance {current.balance} below the cost"
        elif settings.daily_budget is not None and current.spent_today + offer.cost > settings.daily_budget:
            dropped = "daily budget spent"
        ranked.append(Candidate(name, offer.cost, _score(config, offer.cost, health), health, dropped))
    ranked.sort(key=lambda c: (c.dropped is not None, c.score, c.name))
    return ranked


def _score(config: RoutingConfig, cost: Decimal, health: ChannelHealth) -> Decimal:
    if health.samples < config.health.min_samples:
        return cost
    return cost / health.success_rate + config.health.latency_cost * health.mean_latency


#: Providers whose scores are within this fraction of the best share traffic by weight.
WEIGHT_BAND = Decimal("0.05")


def shares(config: RoutingConfig, ranked: list[Candidate]) -> dict[str, Decimal]:
    """The traffic each viable candidate gets: all of it to the best, unless weights are set
    among the candidates scoring within WEIGHT_BAND of it, which then share by weight
    (a provider without a weight among them counts 1)."""
    viable = [c for c in ranked if c.dropped is None]
    if not viable:
        return {}
    if len(viable) == 1 or not any(config.providers[c.name].weight for c in viable):
        return {viable[0].name: Decimal(1)}
    band = [c for c in viable if c.score <= viable[0].score * (1 + WEIGHT_BAND)]
    weights = {c.name: config.providers[c.name].weight for c in band}
    if len(band) == 1 or not any(weights.values()):
        return {viable[0].name: Decimal(1)}
    total = sum(weight or 1 for weight in weights.values())
    return {name: Decimal(weight or 1) / total for name, weight in weights.items()}


def _pick(config: RoutingConfig, ranked: list[Candidate], verification: Verification) -> Candidate | None:
    split = shares(config, ranked)
    if not split:
        return None
    by_name = {c.name: c for c in ranked}
    if len(split) == 1:
        return by_name[next(iter(split))]
    # Weighted, but the same for the same attempt: a redelivered message chooses alike.
    seed = hashlib.blake2b(f"{verification.id}:{verification.attempt}".encode(), digest_size=8).digest()
    point = Decimal(int.from_bytes(seed) % 1_000_000) / 1_000_000
    for name, share in split.items():
        point -= share
        if point < 0:
            return by_name[name]
    return by_name[name]


def next_attempt(
    config: RoutingConfig,
    policy: Policy,
    providers: Mapping[str, Provider],
    verification: Verification,
    *,
    state: RoutingState,
    now_ms: int,
    refused: Mapping[str, str] | None = None,
) -> Choice | GiveUp:
    """The next attempt after the verification's last one settled (or before its first).

    A failed attempt moves on to the next provider for the same channel, then to the next
    step; a delivered attempt that timed out moves on to the next step. Within a step no
    provider is tried twice.
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
        ranked = candidates(
            config, providers, v, step, state=state, now_ms=now_ms, tried=tried, refused=refused
        )
        best = _pick(config, ranked, v)
        if best is not None:
            return Choice(index, step, providers[best.name], best.cost)
        if any(c.dropped == "breaker open" for c in ranked) and "breaker_open" not in policy.fallback_on:
            return GiveUp("breaker_open", hard=False)
        tried = frozenset()
    return GiveUp(v.reason or "no_provider", hard=False)
