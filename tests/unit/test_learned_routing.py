"""Learned routing: candidates ranked by expected roubles per approved verification, from
conversion estimates in the routing state, with a minimum sample, hysteresis around the
leading choice, a share of exploration, and steps skipped where they do not pay.

Pure functions on injected state: no Redis, no network. Providers are real
`VoicePassword` instances, which selection only asks `supports()`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from worker.core.verification import Channel, Verification
from worker.providers.base import Provider
from worker.providers.voicepassword.adapter import VoicePassword
from worker.routing.config import RoutingConfig
from worker.routing.learning import NOTHING, estimate
from worker.routing.report import explain
from worker.routing.select import Choice, GiveUp, Lead, candidates, learned, next_attempt, outlook
from worker.routing.state import SKIP, ChannelHealth, Conversion, RoutingState, leader_key

#: A MegaFon number (phonenumbers' carrier data).
PHONE = "79991234567"
OPERATOR = "megafon"
NOW_MS = 1_800_000_000_000
FLASH, VOICE = Channel.FLASHCALL, Channel.VOICE
FLASH_KEY = leader_key("default", FLASH, OPERATOR)


def routing(
    *, learning: dict[str, Any] | None = None, policy: dict[str, Any] | None = None, **extra: Any
) -> RoutingConfig:
    """cheap (flash 0.30) and dear (flash 0.40) offer flash calls; both offer voice at 0.50."""

    def entry(flash: str, **more: Any) -> dict[str, Any]:
        return {
            "type": "voicepassword",
            "base_url": "https://vp.example.test",
            "credentials": {"api_key": "env:VP_KEY"},
            "channels": {"flashcall": {"cost": flash}, "voice": {"cost": "0.50"}},
            **more,
        }

    return RoutingConfig.model_validate(
        {
            "providers": {"cheap": entry("0.30", **extra.pop("cheap", {})), "dear": entry("0.40")},
            "policies": {
                "default": {
                    "steps": [{"channel": "flashcall", "timeout": "60s"}, {"channel": "voice"}],
                    **(policy or {}),
                }
            },
            "learning": {"explore": 0, "min_samples": 20, "hysteresis": 0.1, **(learning or {})},
            **extra,
        }
    )


def state(
    rates: dict[tuple[str, Channel], tuple[float, float]] | None = None, leaders: dict[str, str] | None = None
) -> RoutingState:
    """Learned (trials, approvals) per (provider, channel), for this number's operator."""
    learned = {
        (name, channel, OPERATOR): Conversion(trials, approvals, approvals * 15_000)
        for (name, channel), (trials, approvals) in (rates or {}).items()
    }
    return RoutingState(learned=learned, leaders=leaders or {})


def fresh(verification_id: str = "v-learn") -> Verification:
    return Verification(
        id=verification_id,
        phone=PHONE,
        policy="default",
        channels=(),
        code_length=4,
    )


def built(config: RoutingConfig) -> dict[str, Provider]:
    return {
        name: VoicePassword(name, base_url=entry.base_url, timeout=entry.timeout, api_key="unused")
        for name, entry in config.providers.items()
    }


def decide(config: RoutingConfig, current: RoutingState, verification: Verification | None = None) -> Choice:
    decision = next_attempt(
        config,
        config.policies["default"],
        built(config),
        verification or fresh(),
        state=current,
        now_ms=NOW_MS,
    )
    assert isinstance(decision, Choice), decision
    return decision


def test_without_observations_the_cheapest_provider_leads() -> None:
    assert decide(routing(), state()).provider.name == "cheap"


def test_a_provider_that_converts_poorly_loses_to_a_dearer_one_that_converts() -> None:
    # cheap: 0.30 at 40% -> about 0.75 per approval before voice; dear: 0.40 at 95%.
    current = state({("cheap", FLASH): (50, 20), ("dear", FLASH): (50, 47.5)})

    assert decide(routing(), current).provider.name == "dear"


def test_an_estimate_below_the_minimum_sample_does_not_move_traffic() -> None:
    current = state({("cheap", FLASH): (19, 2)})

    assert decide(routing(), current).provider.name == "cheap"


def test_a_provider_not_yet_observed_enough_is_judged_on_its_price() -> None:
    # cheap converts 40% (about 0.60 per approval with voice after it); dear, seen 5 times,
    # is taken to convert: 0.40 per approval.
    current = state({("cheap", FLASH): (50, 20), ("dear", FLASH): (5, 0)})

    assert decide(routing(), current).provider.name == "dear"


def test_the_leader_keeps_the_attempts_while_a_challenger_is_within_the_hysteresis() -> None:
    # dear per approval is about 5% below cheap's: not enough to take over from the leader.
    current = state({("cheap", FLASH): (100, 80), ("dear", FLASH): (100, 100)}, leaders={FLASH_KEY: "cheap"})

    decision = decide(routing(learning={"hysteresis": 0.3}), current)

    assert (decision.provider.name, decision.lead) == ("cheap", None)


def test_a_challenger_beyond_the_hysteresis_takes_over_and_the_attempt_records_the_move() -> None:
    current = state({("cheap", FLASH): (100, 30), ("dear", FLASH): (100, 95)}, leaders={FLASH_KEY: "cheap"})

    decision = decide(routing(), current)

    assert decision.provider.name == "dear"
    assert decision.lead == Lead(FLASH_KEY, "cheap", "dear")


def test_the_first_choice_without_a_leader_becomes_the_leader() -> None:
    assert decide(routing(), state()).lead == Lead(FLASH_KEY, "", "cheap")


def test_a_leader_that_cannot_take_this_attempt_keeps_its_place() -> None:
    # cheap was tried in this step already: dear takes the attempt, the lead stays.
    current = state({("cheap", FLASH): (100, 90)}, leaders={FLASH_KEY: "cheap"})
    failed = fresh().after_attempt(step=0, channel=FLASH, provider="cheap", state="failed", reason="busy")

    decision = decide(routing(), current, failed)

    assert (decision.provider.name, decision.lead) == ("dear", None)


def test_the_explore_share_goes_to_the_other_candidates() -> None:
    config = routing(learning={"explore": 0.1})
    current = state({("cheap", FLASH): (100, 90), ("dear", FLASH): (3, 3)}, leaders={FLASH_KEY: "cheap"})

    picks = [decide(config, current, fresh(f"v-{i}")).provider.name for i in range(2000)]

    assert picks.count("dear") / len(picks) == pytest.approx(0.1, abs=0.02)


def test_exploring_is_the_same_choice_when_the_same_attempt_is_redelivered() -> None:
    config = routing(learning={"explore": 0.5})
    current = state({("cheap", FLASH): (100, 90)}, leaders={FLASH_KEY: "cheap"})

    picks = {decide(config, current, fresh("v-same")).provider.name for _ in range(20)}

    assert len(picks) == 1


def test_an_exploring_attempt_does_not_move_the_lead() -> None:
    config = routing(learning={"explore": 0.5})
    current = state({("cheap", FLASH): (100, 90)}, leaders={FLASH_KEY: "cheap"})

    explored = [
        decision
        for i in range(200)
        if (decision := decide(config, current, fresh(f"v-{i}"))).provider.name == "dear"
    ]

    assert explored
    assert all(decision.lead is None for decision in explored)


def test_a_step_whose_every_candidate_converts_too_rarely_is_skipped() -> None:
    current = state(
        {
            ("cheap", FLASH): (100, 3),
            ("dear", FLASH): (100, 3),
            ("cheap", VOICE): (100, 90),
            ("dear", VOICE): (100, 90),
        }
    )

    decision = decide(routing(), current)

    assert (decision.step.channel, decision.lead) == (VOICE, Lead(FLASH_KEY, "", SKIP))


def test_a_step_is_not_skipped_on_estimates_short_of_the_minimum_sample() -> None:
    current = state({("cheap", FLASH): (100, 3), ("dear", FLASH): (10, 0), ("cheap", VOICE): (100, 90)})

    decision = decide(routing(), current)

    assert (decision.step.channel, decision.provider.name) == (FLASH, "dear")


def test_a_skipped_step_is_still_explored() -> None:
    config = routing(learning={"explore": 0.2})
    current = state(
        {("cheap", FLASH): (100, 3), ("dear", FLASH): (100, 3), ("cheap", VOICE): (100, 90)},
        leaders={FLASH_KEY: SKIP},
    )

    channels = [decide(config, current, fresh(f"v-{i}")).step.channel for i in range(1000)]

    assert channels.count(FLASH) / len(channels) == pytest.approx(0.2, abs=0.04)


def test_a_policy_with_learning_off_ranks_by_cost_alone() -> None:
    current = state({("cheap", FLASH): (100, 10), ("dear", FLASH): (100, 100)})

    decision = decide(routing(policy={"learning": False}), current)

    assert (decision.provider.name, decision.lead) == ("cheap", None)


def test_without_a_learning_section_estimates_are_ignored() -> None:
    config = routing()
    static = RoutingConfig.model_validate({**config.model_dump(mode="json", exclude={"learning"})})
    current = state({("cheap", FLASH): (100, 10), ("dear", FLASH): (100, 100)})

    assert decide(static, current).provider.name == "cheap"


def test_a_provider_not_allowed_the_numbers_operator_is_dropped_whatever_it_converts() -> None:
    config = routing(cheap={"operators": ["mts"]})
    current = state({("cheap", FLASH): (100, 100), ("dear", FLASH): (100, 10)})

    decision = decide(config, current)

    assert decision.provider.name == "dear"


def test_a_breaker_open_leader_is_passed_over_at_once() -> None:
    config = routing()
    current = replace(
        state({("cheap", FLASH): (100, 95)}, leaders={FLASH_KEY: "cheap"}),
        providers={"cheap": replace(RoutingState().of("cheap"), breaker="open", opened_at_ms=NOW_MS)},
    )

    decision = decide(config, current)

    assert (decision.provider.name, decision.lead) == ("dear", None)


def test_the_attempt_carries_the_numbers_operator_range() -> None:
    assert decide(routing(), state()).operator == OPERATOR


def test_named_operator_ranges_place_the_number() -> None:
    config = routing(operators={"capital": ["7999"]})

    assert decide(config, state()).operator == "capital"


def test_a_verification_that_can_go_nowhere_still_gives_up() -> None:
    config = routing(cheap={"operators": ["mts"]}, policy={"steps": [{"channel": "flashcall"}]})
    config = config.model_copy(update={"providers": {"cheap": config.providers["cheap"]}})

    decision = next_attempt(
        config, config.policies["default"], built(config), fresh(), state=state(), now_ms=NOW_MS
    )

    assert decision == GiveUp("no_provider", hard=False)


def test_expected_cost_counts_what_follows_a_miss() -> None:
    # Flash converts 50% for both; voice after it is dear: the cheaper flash call still wins,
    # and its score is (0.30 + 0.5 * 0.50) / (0.5 + 0.5 * 0.9).
    current = state(
        {
            ("cheap", FLASH): (100, 50),
            ("dear", FLASH): (100, 50),
            ("cheap", VOICE): (100, 90),
            ("dear", VOICE): (100, 90),
        }
    )
    config = routing()
    providers = built(config)
    steps = config.policies["default"].steps
    assert config.learning is not None
    after = outlook(
        config,
        config.learning,
        providers,
        fresh(),
        steps[1:],
        operator=OPERATOR,
        state=current,
        now_ms=NOW_MS,
    )
    ranked = learned(
        config.learning,
        candidates(config, providers, fresh(), steps[0], state=current, now_ms=NOW_MS),
        "default",
        FLASH,
        OPERATOR,
        state=current,
        after=after,
        latency_cost=config.health.latency_cost,
    )

    assert ranked[0].name == "cheap"
    assert ranked[0].score == Decimal(f"{(0.30 + 0.5 * 0.50) / (0.5 + 0.5 * 0.9):.4f}")


def test_an_estimate_fades_by_half_in_a_half_life_unobserved() -> None:
    faded = Conversion.from_raw("40.0 30.0 450000.0 1000", now_ms=1000 + 3_600_000, half_life_s=3600)

    assert (faded.trials, faded.approvals, faded.rate) == (20.0, 15.0, 0.75)


def test_an_estimate_does_not_grow_when_another_process_clock_is_behind() -> None:
    faded = Conversion.from_raw("40.0 30.0 450000.0 5000", now_ms=1000, half_life_s=3600)

    assert faded.trials == 40.0


def test_time_to_approval_is_the_mean_over_approvals() -> None:
    assert Conversion(10, 4, 60_000).seconds_to_approval == 15.0


def test_explain_shows_each_candidates_conversion_sample_and_cost_per_approval() -> None:
    current = state({("cheap", FLASH): (100, 30), ("dear", FLASH): (100, 95)}, leaders={FLASH_KEY: "cheap"})

    text = explain(routing(), current, phone=PHONE, now_ms=NOW_MS)

    assert "ranking learned: expected roubles per approved verification" in text
    assert re.search(r"->\s+dear\s+0\.40\s+0\.4250\s+no data\s+95% of 100 attempts, approved in 15s", text)
    assert re.search(r"\s+cheap\s+0\.30\s+0\.6500\s+no data\s+30% of 100 attempts, approved in 15s", text)


def test_explain_tells_a_candidate_short_of_samples_is_judged_on_its_price() -> None:
    current = state({("cheap", FLASH): (100, 80), ("dear", FLASH): (4, 4)})

    text = explain(routing(), current, phone=PHONE, now_ms=NOW_MS)

    assert "judged on price until observed (4 of 20 attempts)" in text


def test_explain_says_when_a_step_is_skipped_and_its_candidates_only_explored() -> None:
    current = state(
        {("cheap", FLASH): (100, 3), ("dear", FLASH): (100, 3), ("cheap", VOICE): (100, 90)},
        leaders={FLASH_KEY: SKIP},
    )

    text = explain(routing(), current, phone=PHONE, now_ms=NOW_MS)

    assert "skipped: going straight on costs 0.5000 per approval, less than any candidate here" in text
    assert re.search(r"cheap\s+0\.30\s+\S+\s+no data\s+3% of 100 attempts.*explored only", text)


def test_a_provider_not_yet_observed_is_taken_to_convert_as_the_observed_leader_does() -> None:
    current = state({("dear", FLASH): (100, 90)}, leaders={FLASH_KEY: "dear"})
    config = routing()
    assert config.learning is not None

    [cheap] = [
        c
        for c in learned(
            config.learning,
            candidates(
                config,
                built(config),
                fresh(),
                config.policies["default"].steps[0],
                state=current,
                now_ms=NOW_MS,
            ),
            "default",
            FLASH,
            OPERATOR,
            state=current,
            after=NOTHING,
            latency_cost=config.health.latency_cost,
        )
        if c.name == "cheap"
    ]

    assert cheap.estimate is not None
    assert (cheap.estimate.rate, cheap.estimate.own) == (0.9, False)


def test_a_provider_not_yet_observed_does_not_take_the_lead_from_an_observed_leader() -> None:
    # cheap, taken to convert as dear does, would be 22% cheaper per approval: it must first
    # be observed (exploration), not win on a guess.
    current = state({("dear", FLASH): (100, 90)}, leaders={FLASH_KEY: "dear"})

    decision = decide(routing(), current)

    assert (decision.provider.name, decision.lead) == ("dear", None)


def test_a_range_little_observed_takes_its_estimate_from_the_providers_other_ranges() -> None:
    # cheap converts 90% on MTS numbers (100 attempts), unobserved on MegaFon's.
    current = RoutingState(learned={("cheap", FLASH, "mts"): Conversion(100, 90, 0)})
    config = routing()
    assert config.learning is not None

    found = estimate(current, config.learning, "cheap", FLASH, OPERATOR)

    assert (round(found.rate, 3), found.own) == (0.9, True)


def test_a_range_whose_own_attempts_differ_moves_towards_its_own_figure() -> None:
    # 40 attempts on MegaFon at 10% against 90% on MTS: (4 + 10 x 0.72) / (40 + 10).
    current = RoutingState(
        learned={
            ("cheap", FLASH, "mts"): Conversion(100, 90, 0),
            ("cheap", FLASH, OPERATOR): Conversion(40, 4, 0),
        }
    )
    config = routing()
    assert config.learning is not None

    found = estimate(current, config.learning, "cheap", FLASH, OPERATOR)

    assert found.rate == pytest.approx((4 + 10 * 94 / 140) / 50)


def test_learned_ranking_does_not_charge_a_provider_for_its_failed_requests() -> None:
    # cheap's API failed half its requests lately: static ranking doubles its price; what
    # learning ranks by is what is paid for, and breakers answer the failures.
    current = replace(
        state({("cheap", FLASH): (100, 90), ("dear", FLASH): (100, 90)}),
        providers={"cheap": replace(RoutingState().of("cheap"), health={FLASH: ChannelHealth(20, 20, 0)})},
    )

    assert decide(routing(), current).provider.name == "cheap"


def test_a_provider_whose_recent_conversion_changed_is_judged_by_the_change() -> None:
    # 90% over its long memory, 10% over its last 10 attempts: it degraded.
    current = replace(
        RoutingState(learned={("cheap", FLASH, OPERATOR): Conversion(50, 45, 0)}),
        recent={("cheap", FLASH): Conversion(10, 1, 0)},
    )
    config = routing()
    assert config.learning is not None

    found = estimate(current, config.learning, "cheap", FLASH, OPERATOR)

    assert found.rate == pytest.approx(0.9 * 0.1 / 0.9)


def test_recent_noise_within_its_uncertainty_leaves_the_estimate_alone() -> None:
    current = replace(
        RoutingState(learned={("cheap", FLASH, OPERATOR): Conversion(50, 45, 0)}),
        recent={("cheap", FLASH): Conversion(10, 8, 0)},
    )
    config = routing()
    assert config.learning is not None

    assert estimate(current, config.learning, "cheap", FLASH, OPERATOR).rate == pytest.approx(0.9)
