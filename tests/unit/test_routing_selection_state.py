"""Routing without Redis: why `candidates` drops a provider, how health and weights rank the
rest, what `explain` prints, the routing file's routing sections, and `phone.normalise`.

The routing state is built by hand as `RoutingState`/`ProviderState` values, as a worker
reads them from `flashcall_routing_state`; providers are `inspectable_provider`s (they are
only asked what they can serve, never called). The clock is a fixed `NOW_MS`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from worker.core.errors import ConfigurationError, RoutingFileError
from worker.core.phone import normalise
from worker.core.verification import Channel, Verification
from worker.process.settings import Settings
from worker.providers.base import Provider
from worker.providers.registry import inspectable_provider
from worker.routing.config import HealthConfig, RateLimit, RoutingConfig, Step, load_routing
from worker.routing.report import explain
from worker.routing.select import Candidate, Choice, GiveUp, candidates, next_attempt
from worker.routing.state import ChannelHealth, ProviderState, RoutingState

PHONE = "79991234567"
NOW_MS = 1_800_000_000_000
FLASH = Step(channel=Channel.FLASHCALL)


def entry(cost: str, **fields: Any) -> dict[str, Any]:
    """A VoicePassword entry offering flash calls at `cost`, plus any other fields."""
    return {
        "type": "voicepassword",
        "base_url": "https://vp.example.test",
        "credentials": {"api_key": "env:VP_KEY"},
        "channels": {"flashcall": {"cost": cost}},
        "breaker": {"fail_max": 3, "reset_timeout": "30s"},
        **fields,
    }


def routing(providers: dict[str, dict[str, Any]], **sections: Any) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {"providers": providers, "policies": {"default": {"steps": [{"channel": "flashcall"}]}}, **sections}
    )


def built(config: RoutingConfig) -> dict[str, Provider]:
    return {name: inspectable_provider(name, settings) for name, settings in config.providers.items()}


def fresh(verification_id: str = "v-routing", **changes: Any) -> Verification:
    """A verification before its first attempt, as flashcall_start leaves it."""
    verification = Verification(
        id=verification_id,
        phone=PHONE,
        policy="default",
        channels=(),
        code_length=4,
    )
    return replace(verification, **changes)


def ranked(
    config: RoutingConfig,
    state: RoutingState | None = None,
    *,
    verification: Verification | None = None,
    refused: dict[str, str] | None = None,
) -> list[Candidate]:
    return candidates(
        config,
        built(config),
        verification or fresh(),
        FLASH,
        state=state or RoutingState(),
        now_ms=NOW_MS,
        refused=refused,
    )


def dropped(config: RoutingConfig, state: RoutingState | None = None, **kwargs: Any) -> dict[str, str | None]:
    """provider name -> why it was dropped (None: a candidate)."""
    return {c.name: c.dropped for c in ranked(config, state, **kwargs)}


def choose(config: RoutingConfig, verification: Verification, state: RoutingState | None = None) -> str:
    decision = next_attempt(
        config,
        config.policies["default"],
        built(config),
        verification,
        state=state or RoutingState(),
        now_ms=NOW_MS,
    )
    assert isinstance(decision, Choice), decision
    return decision.provider.name


def health(delivered: int, failed: int, latency_ms: int = 0) -> dict[Channel, ChannelHealth]:
    return {Channel.FLASHCALL: ChannelHealth(delivered, failed, latency_ms)}


TWO = {"cheap": entry("0.30"), "dear": entry("0.40")}


# --- why a candidate is dropped -------------------------------------------------------


def test_an_open_breaker_drops_the_provider_as_breaker_open() -> None:
    state = RoutingState({"cheap": ProviderState(breaker="open", failures=3, opened_at_ms=NOW_MS - 1_000)})

    assert dropped(routing(TWO), state) == {"dear": None, "cheap": "breaker open"}


def test_an_open_breaker_whose_reset_timeout_is_over_stays_a_candidate_for_its_trial() -> None:
    state = RoutingState({"cheap": ProviderState(breaker="open", failures=3, opened_at_ms=NOW_MS - 30_000)})

    assert dropped(routing(TWO), state) == {"cheap": None, "dear": None}


def test_an_open_breaker_one_millisecond_before_its_reset_timeout_is_still_dropped() -> None:
    state = RoutingState({"cheap": ProviderState(breaker="open", failures=3, opened_at_ms=NOW_MS - 29_999)})

    assert dropped(routing(TWO), state)["cheap"] == "breaker open"


def test_a_half_open_breaker_is_left_to_the_admission_check() -> None:
    state = RoutingState({"cheap": ProviderState(breaker="half-open", opened_at_ms=NOW_MS - 1_000)})

    assert dropped(routing(TWO), state)["cheap"] is None


def test_a_provider_out_of_money_is_dropped_until_its_balance_is_seen() -> None:
    state = RoutingState({"cheap": ProviderState(out_of_money=True)})

    assert dropped(routing(TWO), state)["cheap"] == "out of money until its balance is seen again"


def test_a_known_balance_below_the_cost_drops_the_provider() -> None:
    state = RoutingState({"cheap": ProviderState(balance=Decimal("0.29"))})

    assert dropped(routing(TWO), state)["cheap"] == "balance 0.29 below the cost"


def test_a_balance_that_covers_the_cost_keeps_the_provider() -> None:
    state = RoutingState({"cheap": ProviderState(balance=Decimal("0.30"))})

    assert dropped(routing(TWO), state)["cheap"] is None


def test_a_spent_daily_budget_drops_the_provider() -> None:
    config = routing({"cheap": entry("0.30", daily_budget="10"), "dear": entry("0.40")})
    state = RoutingState({"cheap": ProviderState(spent_today=Decimal("9.71"))})

    assert dropped(config, state)["cheap"] == "daily budget spent"


def test_a_budget_with_exactly_this_attempts_cost_left_keeps_the_provider() -> None:
    config = routing({"cheap": entry("0.30", daily_budget="10"), "dear": entry("0.40")})
    state = RoutingState({"cheap": ProviderState(spent_today=Decimal("9.70"))})

    assert dropped(config, state)["cheap"] is None


def test_a_provider_whose_prefixes_miss_the_number_is_dropped() -> None:
    config = routing({"cheap": entry("0.30", prefixes=["7900", "7901"]), "dear": entry("0.40")})

    assert dropped(config)["cheap"] == "does not serve this number's prefix"


def test_a_provider_whose_prefix_matches_the_number_is_a_candidate() -> None:
    config = routing({"cheap": entry("0.30", prefixes=["7900", "7999"]), "dear": entry("0.40")})

    assert dropped(config)["cheap"] is None


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [("breaker_open", "breaker open"), ("no_money", "no money"), ("budget_spent", "budget spent")],
)
def test_a_provider_that_refused_this_attempt_is_dropped_with_the_refusal(refusal: str, reason: str) -> None:
    assert dropped(routing(TWO), refused={"cheap": refusal})["cheap"] == reason


def test_next_attempt_after_a_refusal_takes_the_next_candidate_without_counting_an_attempt() -> None:
    config = routing(TWO)
    decision = next_attempt(
        config,
        config.policies["default"],
        built(config),
        fresh(),
        state=RoutingState(),
        now_ms=NOW_MS,
        refused={"cheap": "breaker_open"},
    )

    assert isinstance(decision, Choice)
    assert (decision.provider.name, decision.step_index) == ("dear", 0)


def test_when_every_candidate_refused_next_attempt_gives_up_softly() -> None:
    config = routing(TWO)
    decision = next_attempt(
        config,
        config.policies["default"],
        built(config),
        fresh(),
        state=RoutingState(),
        now_ms=NOW_MS,
        refused={"cheap": "no_money", "dear": "breaker_open"},
    )

    assert decision == GiveUp("no_provider", hard=False)


def test_dropped_candidates_are_listed_after_every_viable_one() -> None:
    config = routing({"a": entry("0.10"), "b": entry("0.20"), "c": entry("0.30")})
    state = RoutingState({"a": ProviderState(out_of_money=True)})

    assert [c.name for c in ranked(config, state)] == ["b", "c", "a"]


# --- health ---------------------------------------------------------------------------


def test_with_fewer_than_min_samples_the_score_is_the_cost() -> None:
    config = routing(TWO, health={"min_samples": 10})
    state = RoutingState({"cheap": ProviderState(health=health(0, 9, 90_000))})

    scores = {c.name: c.score for c in ranked(config, state)}

    assert scores == {"cheap": Decimal("0.30"), "dear": Decimal("0.40")}


def test_with_min_samples_the_score_is_cost_over_success_rate_plus_latency_worth() -> None:
    config = routing(TWO, health={"min_samples": 4, "latency_cost": "0.10"})
    # 3 delivered of 4 (one more success assumed: 4/5), 2 s of latency on average.
    state = RoutingState({"cheap": ProviderState(health=health(3, 1, 8_000))})

    [cheap] = [c for c in ranked(config, state) if c.name == "cheap"]

    assert cheap.score == Decimal("0.30") / (Decimal(4) / Decimal(5)) + Decimal("0.10") * 2


def test_a_cheaper_provider_that_fails_often_ranks_below_a_dearer_healthy_one() -> None:
    config = routing(TWO, health={"min_samples": 5})
    state = RoutingState(
        {
            "cheap": ProviderState(health=health(2, 8, 1_000)),
            "dear": ProviderState(health=health(10, 0, 1_000)),
        }
    )

    assert [c.name for c in ranked(config, state)] == ["dear", "cheap"]
    assert choose(config, fresh(), state) == "dear"


def test_health_below_min_samples_leaves_the_cheaper_provider_first() -> None:
    config = routing(TWO, health={"min_samples": 20})
    state = RoutingState({"cheap": ProviderState(health=health(2, 8, 1_000))})

    assert choose(config, fresh(), state) == "cheap"


def test_success_rate_assumes_one_success_so_an_untried_provider_is_not_ranked_at_zero() -> None:
    assert ChannelHealth().success_rate == 1
    assert ChannelHealth(delivered=0, failed=3).success_rate == Decimal(1) / Decimal(4)


def test_mean_latency_is_in_seconds_per_sample() -> None:
    assert ChannelHealth(delivered=3, failed=1, latency_ms=2_000).mean_latency == Decimal("0.5")
    assert ChannelHealth().mean_latency == 0


# --- weights --------------------------------------------------------------------------

WEIGHTED = {"light": entry("0.30", weight=1), "heavy": entry("0.30", weight=3)}


def test_a_weighted_choice_is_the_same_for_the_same_verification_and_attempt() -> None:
    config = routing(WEIGHTED)

    for number in range(50):
        verification = fresh(f"order-{number}")
        assert len({choose(config, verification) for _ in range(5)}) == 1


def test_a_weighted_choice_depends_on_the_attempt_number_too() -> None:
    config = routing(WEIGHTED)

    differing = [
        number
        for number in range(200)
        if choose(config, fresh(f"order-{number}", attempt=0))
        != choose(config, fresh(f"order-{number}", attempt=1, attempt_state="failed", step=0, reason="busy"))
    ]

    assert differing


def test_weighted_choices_over_many_verifications_follow_the_weights() -> None:
    config = routing(WEIGHTED)

    shares = Counter(choose(config, fresh(f"order-{number}")) for number in range(2000))

    assert set(shares) == {"light", "heavy"}
    assert 0.70 < shares["heavy"] / 2000 < 0.80


def test_without_weights_a_tie_goes_to_the_first_name_every_time() -> None:
    config = routing({"vp-b": entry("0.30"), "vp-a": entry("0.30")})

    assert {choose(config, fresh(f"order-{number}")) for number in range(100)} == {"vp-a"}


def test_weights_share_only_a_tie_and_a_cheaper_provider_takes_every_attempt() -> None:
    config = routing({**WEIGHTED, "cheapest": entry("0.20")})

    assert {choose(config, fresh(f"order-{number}")) for number in range(100)} == {"cheapest"}


# --- explain --------------------------------------------------------------------------


def explain_lines() -> list[str]:
    config = routing(
        {
            "vp-cheap": entry("0.20"),
            "vp-next": entry("0.30"),
            "vp-broken": entry("0.10"),
            "vp-broke": entry("0.15"),
            "vp-elsewhere": entry("0.05", prefixes=["7800"]),
        }
    )
    state = RoutingState(
        {
            "vp-broken": ProviderState(breaker="open", failures=3, opened_at_ms=NOW_MS - 1_000),
            "vp-broke": ProviderState(out_of_money=True),
            "vp-next": ProviderState(health=health(3, 1, 2_000)),
        }
    )
    return explain(config, state, phone=PHONE, now_ms=NOW_MS).splitlines()


def line_of(lines: list[str], provider: str) -> str:
    [found] = [line for line in lines if f" {provider} " in line]
    return found


def test_explain_marks_the_cheapest_viable_provider_as_chosen() -> None:
    assert line_of(explain_lines(), "vp-cheap").rstrip().endswith("chosen: the lowest score")
    assert line_of(explain_lines(), "vp-cheap").lstrip().startswith("->")


def test_explain_lists_the_next_viable_provider_with_its_health() -> None:
    line = line_of(explain_lines(), "vp-next")

    assert "next if the one above fails" in line
    assert "3/4 ok, 0.50s" in line


@pytest.mark.parametrize(
    ("provider", "why"),
    [
        ("vp-broken", "dropped: breaker open"),
        ("vp-broke", "dropped: out of money until its balance is seen again"),
        ("vp-elsewhere", "dropped: does not serve this number's prefix"),
    ],
)
def test_explain_names_each_dropped_provider_with_its_reason(provider: str, why: str) -> None:
    assert why in line_of(explain_lines(), provider)


def test_explain_shows_an_open_breakers_failures() -> None:
    assert "open (3 failures)" in line_of(explain_lines(), "vp-broken")


def test_explain_names_every_candidate_once_and_masks_the_phone() -> None:
    text = "\n".join(explain_lines())

    for provider in ("vp-cheap", "vp-next", "vp-broken", "vp-broke", "vp-elsewhere"):
        assert text.count(f" {provider} ") == 1
    assert PHONE not in text
    assert "+7999*****67" in text


# --- the routing file's routing sections ----------------------------------------------

ROUTING_FILE = """\
providers:
  vp:
    type: voicepassword
    base_url: https://vp.example.test
    credentials: {api_key: env:VP_KEY}
    channels:
      flashcall: {cost: 0.35}
    prefixes: ["7900", "7999"]
    daily_budget: 150.50
    weight: 3
    breaker: {fail_max: 4, reset_timeout: 45s}
policies:
  default:
    steps:
      - {channel: flashcall}
limits:
  per_phone:
    - {limit: 2, per: 5m}
    - {limit: 5, per: 1d}
health:
  window: 10m
  min_samples: 7
  latency_cost: 0.2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, old: str, new: str) -> str:
    assert ROUTING_FILE.count(old) == 1
    with pytest.raises(RoutingFileError) as caught:
        load_routing(write(tmp_path, ROUTING_FILE.replace(old, new)), environ={})
    return str(caught.value)


def test_prefixes_budget_weight_and_breaker_are_read(tmp_path: Path) -> None:
    provider = load_routing(write(tmp_path, ROUTING_FILE), environ={}).providers["vp"]

    assert provider.prefixes == ("7900", "7999")
    assert provider.daily_budget == Decimal("150.50")
    assert provider.weight == 3
    assert (provider.breaker.fail_max, provider.breaker.reset_timeout) == (4, 45.0)


def test_limits_and_health_are_read(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, ROUTING_FILE), environ={})

    assert config.limits.per_phone == (RateLimit(limit=2, per=300.0), RateLimit(limit=5, per=86400.0))
    assert config.health == HealthConfig(window=600.0, min_samples=7, latency_cost=Decimal("0.2"))


def test_without_these_sections_the_defaults_apply(tmp_path: Path) -> None:
    text = ROUTING_FILE.split("limits:")[0]
    for line in ('    prefixes: ["7900", "7999"]\n', "    daily_budget: 150.50\n", "    weight: 3\n"):
        text = text.replace(line, "")
    config = load_routing(write(tmp_path, text), environ={})
    provider = config.providers["vp"]

    assert (provider.prefixes, provider.daily_budget, provider.weight) == ((), None, None)
    assert config.limits.per_phone == (RateLimit(limit=1, per=120.0), RateLimit(limit=10, per=86400.0))
    assert config.health == HealthConfig(window=300.0, min_samples=20, latency_cost=Decimal("0.05"))


@pytest.mark.parametrize("prefix", ['"8900"', '"+7900"', '"7900a"', '"790012345678"', '""'])
def test_a_prefix_that_is_not_the_start_of_a_normalised_number_is_refused(
    tmp_path: Path, prefix: str
) -> None:
    error = error_for(tmp_path, '["7900", "7999"]', f'["7999", {prefix}]')

    assert ":8: providers.vp.prefixes.1: " in error


def test_a_zero_daily_budget_is_refused(tmp_path: Path) -> None:
    error = error_for(tmp_path, "daily_budget: 150.50", "daily_budget: 0")

    assert ":9: providers.vp.daily_budget: " in error
    assert "greater than 0" in error


def test_a_weight_of_zero_is_refused(tmp_path: Path) -> None:
    error = error_for(tmp_path, "weight: 3", "weight: 0")

    assert ":10: providers.vp.weight: " in error
    assert "greater than or equal to 1" in error


def test_a_fail_max_of_zero_is_refused(tmp_path: Path) -> None:
    assert "providers.vp.breaker.fail_max: " in error_for(tmp_path, "fail_max: 4", "fail_max: 0")


def test_a_per_phone_limit_of_zero_is_refused(tmp_path: Path) -> None:
    error = error_for(tmp_path, "{limit: 2, per: 5m}", "{limit: 0, per: 5m}")

    assert ":18: limits.per_phone.0.limit: " in error


def test_a_per_phone_window_that_is_not_a_duration_is_refused(tmp_path: Path) -> None:
    error = error_for(tmp_path, "{limit: 5, per: 1d}", "{limit: 5, per: daily}")

    assert ":19: limits.per_phone.1.per: " in error


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("min_samples: 7", "min_samples: 0", "health.min_samples"),
        ("latency_cost: 0.2", "latency_cost: -0.1", "health.latency_cost"),
        ("window: 10m", "window: 0s", "health.window"),
    ],
)
def test_an_impossible_health_setting_is_refused(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert f"{field}: " in error_for(tmp_path, old, new)


# --- the routing state as the library reports it ---------------------------------------


def test_the_routing_state_document_is_read_into_provider_states() -> None:
    state = RoutingState.from_json(
        {
            "vp": {
                "breaker": "open",
                "failures": 5,
                "opened_at": NOW_MS - 10,
                "no_money_ms": 599_000,
                "spent_e4": 123_500,
                "balance": "42.50",
                "balance_at": NOW_MS - 1_000,
                "health": {
                    "flashcall": {"ok": 7, "fail": 2, "ms": 900},
                    "voice": {"ok": 0, "fail": 0, "ms": 0},
                    "sms": {"ok": 0, "fail": 0, "ms": 0},
                },
            }
        }
    )

    assert state.of("vp") == ProviderState(
        breaker="open",
        failures=5,
        opened_at_ms=NOW_MS - 10,
        out_of_money=True,
        spent_today=Decimal("12.35"),
        balance=Decimal("42.50"),
        health={
            Channel.FLASHCALL: ChannelHealth(7, 2, 900),
            Channel.VOICE: ChannelHealth(),
            Channel.SMS: ChannelHealth(),
        },
    )


def test_no_money_mark_absent_and_no_balance_read_mean_in_rotation() -> None:
    state = RoutingState.from_json(
        {
            "vp": {
                "breaker": "closed",
                "failures": 0,
                "opened_at": 0,
                "no_money_ms": -2,
                "spent_e4": 0,
                "balance": "",
                "balance_at": 0,
                "health": {},
            }
        }
    )

    assert (state.of("vp").out_of_money, state.of("vp").balance) == (False, None)


def test_a_provider_the_state_does_not_mention_is_closed_and_in_rotation() -> None:
    assert RoutingState().of("unknown") == ProviderState()


# --- phone.normalise ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["+79991234567", "79991234567", "89991234567", "+7 (999) 123-45-67", "8 999 123 45 67"]
)
def test_normalise_accepts_the_forms_flashcall_start_accepts(raw: str) -> None:
    assert normalise(raw) == PHONE


@pytest.mark.parametrize(
    "raw", ["", "9991234567", "+7999123456", "+799912345678", "+380991234567", "+7999123456a", "7-999-123"]
)
def test_normalise_refuses_what_is_not_a_russian_number(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a Russian number"):
        normalise(raw)


# --- the runtime's intervals ----------------------------------------------------------


def test_the_background_intervals_default_to_2s_reload_1s_state_and_1min_balances() -> None:
    settings = Settings.from_env({}, require_secret=False)

    assert (settings.reload_interval, settings.state_interval, settings.balance_interval) == (2.0, 1.0, 60.0)


def test_the_background_intervals_are_read_in_milliseconds_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FLASHCALL_RELOAD_INTERVAL_MS": "200",
            "FLASHCALL_STATE_INTERVAL_MS": "250",
            "FLASHCALL_BALANCE_INTERVAL_MS": "500",
        },
        require_secret=False,
    )

    assert (settings.reload_interval, settings.state_interval, settings.balance_interval) == (0.2, 0.25, 0.5)


@pytest.mark.parametrize(
    "variable",
    ["FLASHCALL_RELOAD_INTERVAL_MS", "FLASHCALL_STATE_INTERVAL_MS", "FLASHCALL_BALANCE_INTERVAL_MS"],
)
@pytest.mark.parametrize("value", ["0", "-5", "1s", "0.5"])
def test_an_interval_that_is_not_a_positive_number_of_milliseconds_is_refused(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value}, require_secret=False)
