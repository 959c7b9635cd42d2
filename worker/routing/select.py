"""Which provider makes the next attempt of a verification, or why there is none.

For each step, the candidates are the providers that offer its channel for this number;
those disabled, not allowed this number's operator range, already tried in this step,
unable to serve the request, with an open breaker, out of money or over their daily
budget are dropped, each with its reason. Static rules always come first: learning only
ranks what they leave.

Static ranking (no `learning` in routing.yaml, or a policy with `learning: false`) is by
cost adjusted by health: the price of a delivered attempt (cost over the recent success
rate) plus what the provider's mean latency is worth. The best takes the attempt; where
weights are set, the providers scoring within 5% of the best share attempts by weight.

Learned ranking is by expected roubles per approved verification (worker/routing/learning.py).
The leading choice of each policy x channel x operator range, shared in Redis, keeps the
attempts until a challenger beats it by `hysteresis`; the attempt that moves past it
records the new leader and announces the demotion. A step whose candidates all convert so
poorly that going straight on is cheaper per approval is skipped. `explore` of the attempts
go to the least observed other candidate, so that estimates of providers not chosen stay
fresh.

`decide` returns the choice together with what it weighed, step by step: `routing explain`
(worker/routing/report.py) renders that Decision, and `next_attempt` is its outcome.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from worker.core import phone
from worker.core.verification import Channel, Verification
from worker.providers.base import Provider
from worker.routing.config import LearningConfig, Policy, RoutingConfig, Step
from worker.routing.learning import NOTHING, Estimate, Outlook, estimate, through
from worker.routing.operators import operator_of
from worker.routing.state import SKIP, ChannelHealth, RoutingState, leader_key

__all__ = [
    "WEIGHT_BAND",
    "Candidate",
    "Choice",
    "Decision",
    "GiveUp",
    "Lead",
    "StepReview",
    "Why",
    "candidates",
    "decide",
    "exploring",
    "leading",
    "learned",
    "next_attempt",
    "outlook",
    "shares",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    cost: Decimal
    score: Decimal
    """Cost adjusted by health: what ranks candidates, lowest first."""
    health: ChannelHealth
    dropped: str | None = None
    """Why this provider cannot take the attempt now; None when it can."""
    estimate: Estimate | None = None
    """Its learned conversion, when the ranking is learned (the score is then the expected
    roubles per approved verification)."""


@dataclass(frozen=True, slots=True)
class Lead:
    """A move of the leading choice, recorded with the attempt that makes it."""

    key: str
    previous: str
    """'' when there was none yet."""
    current: str


@dataclass(frozen=True, slots=True)
class Choice:
    step_index: int
    step: Step
    provider: Provider
    cost: Decimal
    """The configured price of this attempt, for providers that do not report one."""
    operator: str = "other"
    """The number's operator range, which the attempt's outcome is learned for."""
    lead: Lead | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str
    hard: bool
    """Fail even if a code was delivered earlier (the number itself is bad)."""


#: Why a step gives the attempt to its pick: `lowest_score` and `weight` in the static
#: ranking; `lowest_per_approval`, `leads` (within the hysteresis), `explored` and
#: `skipped` (going straight on is cheaper per approval) in the learned one; `none` when
#: no candidate can take it.
Why = Literal["lowest_score", "weight", "lowest_per_approval", "leads", "explored", "skipped", "none"]


@dataclass(frozen=True, slots=True)
class StepReview:
    """One step as `decide` weighed it."""

    index: int
    step: Step
    ranked: tuple[Candidate, ...]
    """Every provider offering the step's channel, best first: scored by cost adjusted by
    health, or by expected roubles per approval where the ranking is learned."""
    pick: str | None
    """The provider the step gives the attempt to, SKIP, or None when none can take it."""
    why: Why
    shares: Mapping[str, Decimal]
    """Static ranking: the traffic each provider of the pick's weight band gets."""
    leading: str | None = None
    """Learned ranking: the choice before exploration (a provider, SKIP or None)."""
    after: Outlook | None = None
    """Learned ranking: what the later steps are expected to cost and approve."""
    lead: Lead | None = None
    reached: bool = True
    """False for a step after the one that decided, weighed as if it were reached now."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What `decide` chose for the next attempt, with what it weighed on the way."""

    outcome: Choice | GiveUp
    operator: str
    learning: LearningConfig | None
    """The learning that ranks this policy's candidates; None where the ranking is static."""
    steps: tuple[StepReview, ...] = ()
    """The steps weighed, in order, from the verification's current one; none when it
    gave up before weighing any (a bad number, no attempt left, no fallback)."""


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
    operator: str | None = None,
) -> list[Candidate]:
    """Every provider offering the step's channel, best first by the static ranking; those
    that cannot take the attempt last, with why. `refused` holds providers that just refused
    this attempt."""
    v = verification
    operator = operator_of(v.phone, config.operators) if operator is None else operator
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
        elif settings.operators and operator not in settings.operators:
            dropped = f"not allowed {operator} numbers"
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


def _pick(split: Mapping[str, Decimal], verification: Verification) -> str | None:
    if not split:
        return None
    if len(split) == 1:
        return next(iter(split))
    # Weighted, but the same for the same attempt: a redelivered message chooses alike.
    seed = hashlib.blake2b(f"{verification.id}:{verification.attempt}".encode(), digest_size=8).digest()
    point = Decimal(int.from_bytes(seed) % 1_000_000) / 1_000_000
    for name, share in split.items():
        point -= share
        if point < 0:
            return name
    return name


def _price(candidate: Candidate, latency_cost: Decimal) -> float:
    """What learned ranking prices an attempt at: its cost and its API's latency."""
    return float(candidate.cost + latency_cost * candidate.health.mean_latency)


def learned(
    learning: LearningConfig,
    ranked: list[Candidate],
    policy: str,
    channel: Channel,
    operator: str,
    *,
    state: RoutingState,
    after: Outlook,
    latency_cost: Decimal,
) -> list[Candidate]:
    """The candidates scored by expected roubles per approved verification, best first.
    One not yet observed enough is taken to convert as the leader does.

    An attempt's price is its cost and what its API's latency is worth, not divided by the
    API's success rate as static ranking does: a failed request is not billed (and the
    next candidate is asked at once), and breakers answer hard failures; learning answers
    what is paid for."""
    leader = state.leaders.get(leader_key(policy, channel, operator), SKIP)
    prior = 1.0
    if leader != SKIP:
        leading_estimate = estimate(state, learning, leader, channel, operator)
        if leading_estimate.own:
            prior = leading_estimate.rate
    scored = []
    for candidate in ranked:
        found = estimate(state, learning, candidate.name, channel, operator, prior=prior)
        per_approval = through(_price(candidate, latency_cost), found.rate, after).per_approval
        score = Decimal("Infinity") if math.isinf(per_approval) else Decimal(f"{per_approval:.4f}")
        # Not dataclasses.replace, which inspects the class on every call: this runs for every
        # candidate of every step weighed for every attempt.
        scored.append(
            Candidate(candidate.name, candidate.cost, score, candidate.health, candidate.dropped, found)
        )
    scored.sort(key=lambda c: (c.dropped is not None, c.score, c.name))
    return scored


def _options(ranked: list[Candidate], after: Outlook) -> dict[str, Decimal]:
    """Each viable candidate's expected cost per approval, and going straight on (SKIP)
    where every candidate's estimate is its own and what follows can approve."""
    viable = [c for c in ranked if c.dropped is None]
    options = {c.name: c.score for c in viable}
    if viable and after.approval > 0 and all(c.estimate and c.estimate.own for c in viable):
        options[SKIP] = Decimal(f"{after.per_approval:.4f}")
    return options


def outlook(
    config: RoutingConfig,
    learning: LearningConfig,
    providers: Mapping[str, Provider],
    verification: Verification,
    steps: tuple[Step, ...],
    *,
    operator: str,
    state: RoutingState,
    now_ms: int,
) -> Outlook:
    """What these steps are expected to cost and approve, each taking its best option."""
    after = NOTHING
    for step in reversed(steps):
        ranked = candidates(
            config, providers, verification, step, state=state, now_ms=now_ms, operator=operator
        )
        scored = learned(
            learning,
            ranked,
            verification.policy,
            step.channel,
            operator,
            state=state,
            after=after,
            latency_cost=config.health.latency_cost,
        )
        options = _options(scored, after)
        if not options:
            continue
        best = min(options, key=lambda name: options[name])
        if best != SKIP:
            chosen = next(c for c in scored if c.name == best)
            assert chosen.estimate is not None
            after = through(_price(chosen, config.health.latency_cost), chosen.estimate.rate, after)
    return after


def exploring(verification_id: str, attempt: int, share: float) -> bool:
    """Whether this attempt (the verification's `attempt`-th, from 0) is one of the `share`
    that explore; the same for the same attempt, so a redelivered message chooses alike."""
    seed = hashlib.blake2b(f"{verification_id}:{attempt}:explore".encode(), digest_size=8).digest()
    return (int.from_bytes(seed) % 1_000_000) / 1_000_000 < share


def leading(
    learning: LearningConfig, key: str, ranked: list[Candidate], after: Outlook, state: RoutingState
) -> tuple[str | None, Lead | None]:
    """The choice before exploration: the leader while it is within `hysteresis` of the best
    option, else the best (a candidate's name, SKIP, or None when none can take the
    attempt); and the leader's move, when there is one."""
    options = _options(ranked, after)
    if not options:
        return None, None
    leader = state.leaders.get(key)
    own = {c.name for c in ranked if c.estimate is not None and c.estimate.own} | {SKIP}
    if leader in own and leader in options:
        # Only what has been observed enough may take the lead from an observed leader.
        contenders = {name: score for name, score in options.items() if name in own}
    else:
        contenders = options
    best = min(contenders, key=lambda name: contenders[name])
    if leader in options and options[leader] <= options[best] * (1 + Decimal(str(learning.hysteresis))):
        return leader, None
    # A leader this attempt cannot use (tried already, breaker open) keeps its place.
    if leader is None or leader in options or leader == SKIP:
        return best, Lead(key, leader or "", best)
    return best, None


def _explored(
    learning: LearningConfig, ranked: list[Candidate], choice: str | None, verification: Verification
) -> str | None:
    """The candidate this attempt explores instead of `choice`, if it is one that explores."""
    others = sorted(c.name for c in ranked if c.dropped is None and c.name != choice)
    if choice is None or not others or not exploring(verification.id, verification.attempt, learning.explore):
        return None
    # Each other candidate in turn: a provider demoted long ago is observed as often as
    # one never tried, so that it is seen to recover.
    seed = hashlib.blake2b(f"{verification.id}:{verification.attempt}:which".encode(), digest_size=8)
    return others[int.from_bytes(seed.digest()) % len(others)]


def _weigh_static(
    config: RoutingConfig, index: int, step: Step, ranked: list[Candidate], verification: Verification
) -> StepReview:
    split = shares(config, ranked)
    pick = _pick(split, verification)
    why: Why = "none" if pick is None else "lowest_score" if len(split) == 1 else "weight"
    return StepReview(index, step, tuple(ranked), pick, why, split)


def _weigh_learned(
    config: RoutingConfig,
    learning: LearningConfig,
    providers: Mapping[str, Provider],
    verification: Verification,
    steps: tuple[Step, ...],
    index: int,
    ranked: list[Candidate],
    *,
    operator: str,
    state: RoutingState,
    now_ms: int,
) -> StepReview:
    v, step = verification, steps[index]
    after = outlook(
        config, learning, providers, v, steps[index + 1 :], operator=operator, state=state, now_ms=now_ms
    )
    scored = learned(
        learning,
        ranked,
        v.policy,
        step.channel,
        operator,
        state=state,
        after=after,
        latency_cost=config.health.latency_cost,
    )
    key = leader_key(v.policy, step.channel, operator)
    choice, lead = leading(learning, key, scored, after, state)
    explored = _explored(learning, scored, choice, v)
    if explored is not None:
        return StepReview(index, step, tuple(scored), explored, "explored", {}, leading=choice, after=after)
    why = _why_learned(choice, lead, state.leaders.get(key))
    return StepReview(index, step, tuple(scored), choice, why, {}, leading=choice, after=after, lead=lead)


def _why_learned(choice: str | None, lead: Lead | None, leader: str | None) -> Why:
    if choice is None:
        return "none"
    if choice == SKIP:
        return "skipped"
    if lead is None and choice == leader:
        return "leads"
    return "lowest_per_approval"


def _resumption(policy: Policy, verification: Verification) -> tuple[int, frozenset[str]] | GiveUp:
    """Where the next attempt is looked for (the step, and the providers tried in it
    already), or why the verification makes none."""
    v = verification
    # The producer function takes any +7 number of the right length; Kazakhstan's and
    # unassigned ranges are refused here, before anyone is paid to call them.
    if v.attempt == 0 and not phone.is_valid_russian(v.phone):
        return GiveUp("bad_number", hard=True)
    if v.attempt_state == "failed" and v.reason not in policy.fallback_on:
        return GiveUp(v.reason, hard=True)
    if v.attempt >= policy.max_attempts:
        return GiveUp("max_attempts_reached", hard=False)
    if v.attempt_state == "failed" and v.step is not None:
        return v.step, frozenset(v.tried)
    if v.attempt_state == "timed_out" and v.step is not None:
        if "timeout" not in policy.fallback_on:
            return GiveUp("timeout", hard=False)
        return v.step + 1, frozenset()
    return 0, frozenset()


def decide(
    config: RoutingConfig,
    policy: Policy,
    providers: Mapping[str, Provider],
    verification: Verification,
    *,
    state: RoutingState,
    now_ms: int,
    refused: Mapping[str, str] | None = None,
    look_ahead: bool = False,
) -> Decision:
    """The next attempt after the verification's last one settled (or before its first),
    and the steps weighed for it.

    A number that is not an assigned Russian one is refused before its first attempt. A
    failed attempt moves on to the next provider for the same channel, then to the next
    step; a delivered attempt that timed out moves on to the next step. Within a step no
    provider is tried twice. `look_ahead` weighs the steps after the one that decided as
    well, as if each were reached now; the outcome is the same.
    """
    v = verification
    operator = operator_of(v.phone, config.operators)
    learning = config.learning if policy.learning else None
    steps = policy.steps_for(v.channels)
    start = _resumption(policy, v)
    if isinstance(start, GiveUp):
        return Decision(start, operator, learning)
    first_step, tried = start
    outcome: Choice | GiveUp | None = None
    lead: Lead | None = None
    reviews: list[StepReview] = []
    for index in range(first_step, len(steps)):
        step = steps[index]
        ranked = candidates(
            config,
            providers,
            v,
            step,
            state=state,
            now_ms=now_ms,
            tried=tried,
            refused=refused,
            operator=operator,
        )
        tried = frozenset()
        if learning is None:
            review = _weigh_static(config, index, step, ranked, v)
        else:
            review = _weigh_learned(
                config,
                learning,
                providers,
                v,
                steps,
                index,
                ranked,
                operator=operator,
                state=state,
                now_ms=now_ms,
            )
        if outcome is not None:
            reviews.append(replace(review, reached=False))
            continue
        reviews.append(review)
        lead = lead or review.lead
        if review.pick is not None and review.pick != SKIP:
            chosen = next(c for c in review.ranked if c.name == review.pick)
            outcome = Choice(index, step, providers[review.pick], chosen.cost, operator, lead)
        elif (
            review.pick is None
            and any(c.dropped == "breaker open" for c in review.ranked)
            and "breaker_open" not in policy.fallback_on
        ):
            outcome = GiveUp("breaker_open", hard=False)
        if outcome is not None and not look_ahead:
            break
    return Decision(
        outcome or GiveUp(v.reason or "no_provider", hard=False), operator, learning, tuple(reviews)
    )


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
    """What `decide` chose: the next attempt, or why there is none."""
    return decide(
        config, policy, providers, verification, state=state, now_ms=now_ms, refused=refused
    ).outcome
