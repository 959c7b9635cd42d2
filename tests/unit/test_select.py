"""Provider selection: `next_attempt` picks the provider and step of a verification's next
attempt, or says why there is none (`GiveUp`).

Providers are real `VoicePassword` instances; selection only asks them `supports()`, so no
network is touched and no transport is installed. Verifications are built directly as the
store would read them.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from worker.core.verification import Channel, Verification
from worker.providers.base import Provider
from worker.providers.voicepassword.adapter import VoicePassword
from worker.routing.config import DEFAULT_FALLBACK_ON, RoutingConfig, Step
from worker.routing.select import Choice, GiveUp, next_attempt
from worker.routing.state import RoutingState

PHONE = "79991234567"
NOW_MS = 1_800_000_000_000

#: (flashcall cost, voice cost, sms cost); None when the channel is not offered.
Offers = tuple[str | None, str | None, str | None]

#: name -> offers.
COSTS: dict[str, Offers] = {
    "vp-a": ("0.40", "0.45", "3.50"),
    "vp-b": ("0.35", "0.50", "3.30"),
    "vp-c": ("0.50", "0.35", None),
}

DEFAULT_STEPS: list[dict[str, Any]] = [
    {"channel": "flashcall", "timeout": "60s"},
    {"channel": "voice", "timeout": "90s"},
    {"channel": "sms"},
]


def provider_entry(
    flashcall: str | None, voice: str | None, sms: str | None, *, enabled: bool = True
) -> dict[str, Any]:
    offers = {"flashcall": flashcall, "voice": voice, "sms": sms}
    return {
        "type": "voicepassword",
        "base_url": "https://vp.example.test",
        "credentials": {"api_key": "env:VP_KEY"},
        "enabled": enabled,
        "channels": {channel: {"cost": cost} for channel, cost in offers.items() if cost is not None},
    }


def routing(
    *,
    costs: dict[str, Offers] | None = None,
    disabled: frozenset[str] = frozenset(),
    steps: list[dict[str, Any]] | None = None,
    **policy: Any,
) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "providers": {
                name: provider_entry(*offers, enabled=name not in disabled)
                for name, offers in (costs or COSTS).items()
            },
            "policies": {"default": {"steps": steps or DEFAULT_STEPS, **policy}},
        }
    )


def built(config: RoutingConfig) -> dict[str, Provider]:
    return {
        name: VoicePassword(name, base_url=settings.base_url, timeout=settings.timeout, api_key="unused")
        for name, settings in config.providers.items()
    }


def fresh(**changes: Any) -> Verification:
    """A verification before its first attempt, as flashcall_start leaves it."""
    verification = Verification(
        id="v-select",
        phone=PHONE,
        policy="default",
        channels=(),
        code_length=4,
    )
    return replace(verification, **changes)


def after(
    verification: Verification, *, step: int, channel: Channel, provider: str, state: str, reason: str = ""
) -> Verification:
    return verification.after_attempt(
        step=step, channel=channel, provider=provider, state=state, reason=reason
    )


def choose(config: RoutingConfig, verification: Verification) -> tuple[Choice | GiveUp, dict[str, Provider]]:
    providers = built(config)
    decision = next_attempt(
        config, config.policies["default"], providers, verification, state=RoutingState(), now_ms=NOW_MS
    )
    return decision, providers


def chosen(config: RoutingConfig, verification: Verification) -> tuple[int, Channel, str]:
    """(step index, channel, provider name) of the choice; fails the test on a GiveUp."""
    decision, providers = choose(config, verification)
    assert isinstance(decision, Choice), decision
    assert providers[decision.provider.name] is decision.provider
    return decision.step_index, decision.step.channel, decision.provider.name


# --- the first attempt ----------------------------------------------------------------


def test_first_attempt_picks_the_cheapest_provider_of_the_first_step() -> None:
    config = routing()

    decision, providers = choose(config, fresh())

    assert decision == Choice(
        0, Step(channel=Channel.FLASHCALL, timeout=60.0), providers["vp-b"], Decimal("0.35"), "megafon"
    )


def test_equal_costs_are_broken_by_provider_name() -> None:
    costs: dict[str, Offers] = {
        "vp-z": ("0.35", None, None),
        "vp-m": ("0.35", None, None),
        "vp-x": ("0.35", None, None),
    }
    config = routing(costs=costs, steps=[{"channel": "flashcall"}])

    assert chosen(config, fresh()) == (0, Channel.FLASHCALL, "vp-m")


def test_disabled_provider_is_skipped() -> None:
    config = routing(disabled=frozenset({"vp-b"}))

    assert chosen(config, fresh()) == (0, Channel.FLASHCALL, "vp-a")


def test_provider_not_built_in_this_process_is_skipped() -> None:
    config = routing()
    providers = built(config)
    del providers["vp-b"]

    decision = next_attempt(
        config, config.policies["default"], providers, fresh(), state=RoutingState(), now_ms=NOW_MS
    )

    assert isinstance(decision, Choice)
    assert decision.provider.name == "vp-a"


def test_step_restricted_to_providers_picks_only_among_them() -> None:
    steps: list[dict[str, Any]] = [
        {"channel": "flashcall", "providers": ["vp-c", "vp-a"]},
        {"channel": "voice"},
    ]
    config = routing(steps=steps)

    assert chosen(config, fresh()) == (0, Channel.FLASHCALL, "vp-a")


# --- after a failed attempt -----------------------------------------------------------


def test_failure_listed_in_fallback_on_moves_to_the_next_provider_of_the_same_step() -> None:
    failed = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason="busy")

    assert chosen(routing(), failed) == (0, Channel.FLASHCALL, "vp-a")


@pytest.mark.parametrize("reason", [str(reason) for reason in DEFAULT_FALLBACK_ON])
def test_every_default_fallback_reason_moves_on_within_the_step(reason: str) -> None:
    failed = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason=reason)

    assert chosen(routing(), failed) == (0, Channel.FLASHCALL, "vp-a")


def test_provider_already_tried_in_the_step_is_never_tried_again() -> None:
    first = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason="busy")
    second = after(
        first, step=0, channel=Channel.FLASHCALL, provider="vp-a", state="failed", reason="refused"
    )

    assert chosen(routing(), second) == (0, Channel.FLASHCALL, "vp-c")


def test_exhausted_step_moves_to_the_next_step() -> None:
    verification = fresh()
    for name in ("vp-b", "vp-a", "vp-c"):
        verification = after(
            verification, step=0, channel=Channel.FLASHCALL, provider=name, state="failed", reason="no_answer"
        )

    assert chosen(routing(), verification) == (1, Channel.VOICE, "vp-c")


def test_providers_tried_in_an_earlier_step_are_candidates_again_in_the_next() -> None:
    costs: dict[str, Offers] = {
        "vp-a": ("0.35", "0.35", None),
        "vp-b": ("0.40", "0.50", None),
    }
    config = routing(costs=costs, steps=[{"channel": "flashcall"}, {"channel": "voice"}])
    verification = fresh()
    for name in ("vp-a", "vp-b"):
        verification = after(
            verification, step=0, channel=Channel.FLASHCALL, provider=name, state="failed", reason="busy"
        )

    assert chosen(config, verification) == (1, Channel.VOICE, "vp-a")


def test_failure_not_in_fallback_on_gives_up_hard_with_that_reason() -> None:
    failed = after(
        fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason="bad_number"
    )

    assert choose(routing(), failed)[0] == GiveUp("bad_number", hard=True)


def test_failure_outside_a_narrow_fallback_on_gives_up_hard() -> None:
    config = routing(fallback_on=["busy", "no_answer"])
    failed = after(
        fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason="provider_error"
    )

    assert choose(config, failed)[0] == GiveUp("provider_error", hard=True)


def test_failure_in_the_last_step_with_no_provider_left_gives_up_softly_with_its_reason() -> None:
    config = routing(steps=[{"channel": "flashcall", "providers": ["vp-b"]}])
    failed = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="failed", reason="busy")

    assert choose(config, failed)[0] == GiveUp("busy", hard=False)


# --- after a delivered attempt timed out ----------------------------------------------


def test_timed_out_attempt_moves_to_the_next_step() -> None:
    timed_out = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="timed_out")

    assert chosen(routing(), timed_out) == (1, Channel.VOICE, "vp-c")


def test_timed_out_attempt_without_timeout_in_fallback_on_gives_up_softly() -> None:
    config = routing(fallback_on=["busy"])
    timed_out = after(fresh(), step=0, channel=Channel.FLASHCALL, provider="vp-b", state="timed_out")

    assert choose(config, timed_out)[0] == GiveUp("timeout", hard=False)


# --- limits ---------------------------------------------------------------------------


def test_reaching_max_attempts_gives_up() -> None:
    config = routing(max_attempts=2)
    verification = fresh(attempt=2, attempt_state="failed", step=0, tried=("vp-b", "vp-a"), reason="busy")

    assert choose(config, verification)[0] == GiveUp("max_attempts_reached", hard=False)


def test_a_bad_number_on_the_last_allowed_attempt_still_fails_hard() -> None:
    config = routing(max_attempts=2)
    verification = fresh(
        attempt=2, attempt_state="failed", step=0, tried=("vp-b", "vp-a"), reason="bad_number"
    )

    assert choose(config, verification)[0] == GiveUp("bad_number", hard=True)


def test_one_attempt_below_max_attempts_still_chooses() -> None:
    config = routing(max_attempts=2)
    verification = fresh(attempt=1, attempt_state="failed", step=0, tried=("vp-b",), reason="busy")

    assert chosen(config, verification) == (0, Channel.FLASHCALL, "vp-a")


def test_no_candidate_in_any_step_gives_up_softly() -> None:
    config = routing(disabled=frozenset(COSTS))

    assert choose(config, fresh())[0] == GiveUp("no_provider", hard=False)


# --- what VoicePassword can serve -----------------------------------------------------


def test_sms_goes_only_to_a_provider_that_placed_an_earlier_call() -> None:
    voice_timed_out = replace(
        after(fresh(), step=1, channel=Channel.VOICE, provider="vp-a", state="timed_out"),
        refs={"vp-a": "771"},
    )

    assert chosen(routing(), voice_timed_out) == (2, Channel.SMS, "vp-a")


def test_sms_without_any_earlier_call_has_no_candidate() -> None:
    voice_timed_out = after(fresh(), step=1, channel=Channel.VOICE, provider="vp-a", state="timed_out")

    assert choose(routing(), voice_timed_out)[0] == GiveUp("no_provider", hard=False)


def test_six_digit_code_skips_voicepassword_voice() -> None:
    config = routing(steps=[{"channel": "voice"}, {"channel": "flashcall"}])

    assert chosen(config, fresh(code_length=6)) == (1, Channel.FLASHCALL, "vp-b")


def test_four_digit_code_is_spoken_by_voicepassword_voice() -> None:
    config = routing(steps=[{"channel": "voice"}, {"channel": "flashcall"}])

    assert chosen(config, fresh(code_length=4)) == (0, Channel.VOICE, "vp-c")


# --- the verification's own channels --------------------------------------------------


def test_requested_channels_reorder_the_steps() -> None:
    decision, providers = choose(routing(), fresh(channels=(Channel.VOICE, Channel.FLASHCALL)))

    assert decision == Choice(
        0, Step(channel=Channel.VOICE, timeout=90.0), providers["vp-c"], Decimal("0.35"), "megafon"
    )


def test_after_the_first_requested_channel_times_out_the_second_follows() -> None:
    verification = fresh(channels=(Channel.VOICE, Channel.FLASHCALL))
    timed_out = after(verification, step=0, channel=Channel.VOICE, provider="vp-c", state="timed_out")

    assert chosen(routing(), timed_out) == (1, Channel.FLASHCALL, "vp-b")


@pytest.mark.parametrize("channel", [Channel.FLASHCALL, Channel.VOICE])
def test_a_single_requested_channel_is_the_only_step(channel: Channel) -> None:
    verification = fresh(channels=(channel,))
    timed_out = after(verification, step=0, channel=channel, provider="vp-b", state="timed_out")

    assert choose(routing(), timed_out)[0] == GiveUp("no_provider", hard=False)
