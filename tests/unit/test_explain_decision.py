"""`routing explain` renders the decision `next_attempt` makes, refusals included.

A property: for generated routing files, routing states and verifications, the decision
the explanation states (its closing line, and the provider marked `->` in the step that
decided) is the one next_attempt returns. Then a number the worker refuses (a Kazakh
one: +7, the right length, not Russian) is refused by explain too.

Pure functions on injected state; providers are `inspectable_provider`s, as explain and
the other routing unit tests build them. The clock is a fixed `NOW_MS`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.verification import Channel, Outcome, Verification
from worker.providers.base import Provider
from worker.providers.registry import PROVIDER_TYPES, inspectable_provider
from worker.routing.config import RoutingConfig
from worker.routing.report import Refusal, explain, explain_verification
from worker.routing.select import Choice, GiveUp, next_attempt
from worker.routing.state import SKIP, ChannelHealth, Conversion, ProviderState, RoutingState, leader_key

NOW_MS = 1_800_000_000_000
NAMES = ("pa", "pb", "pc", "pd")
#: MegaFon, MTS and Beeline mobile numbers, a Moscow landline, and a Kazakh mobile number.
PHONES = ("79991234567", "79161234567", "79031234567", "74951234567", "77011234567")
OPERATORS = ("megafon", "mts", "beeline", "other")
COSTS = ("0.10", "0.20", "0.30", "0.40")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entry(kind: str, channels: dict[Channel, str], **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "base_url": "https://provider.example.test",
        "credentials": {name: "env:UNUSED" for name in PROVIDER_TYPES[kind].credential_names},
        "channels": {str(channel): {"cost": cost} for channel, cost in channels.items()},
        "breaker": {"fail_max": 3, "reset_timeout": "30s"},
        **fields,
    }


def _servable(kind: str, channel: Channel) -> bool:
    try:
        RoutingConfig.model_validate(
            {"providers": {"p": entry(kind, {channel: "0.10"})}, "policies": {"default": {"steps": []}}}
        )
    except pydantic.ValidationError as error:
        return not any(e["loc"][:1] == ("providers",) for e in error.errors())
    return True


#: The channels each provider type serves with its default options.
CHANNELS = {
    kind: tuple(channel for channel in sorted(provider.channels) if _servable(kind, channel))
    for kind, provider in PROVIDER_TYPES.items()
}


def rarely() -> st.SearchStrategy[bool]:
    """True one time in five: for what drops a candidate, so that most steps have some left."""
    return st.sampled_from([False, False, False, False, True])


@st.composite
def provider_entries(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(kind for kind in CHANNELS if CHANNELS[kind])))
    offered = draw(st.lists(st.sampled_from(CHANNELS[kind]), min_size=1, unique=True))
    fields: dict[str, Any] = {"enabled": draw(rarely()) is False}
    if draw(rarely()):
        fields["prefixes"] = [draw(st.sampled_from(["7999", "7916", "7495", "7701"]))]
    if draw(rarely()):
        fields["daily_budget"] = draw(st.sampled_from(["0.30", "5"]))
    if draw(st.booleans()):
        fields["weight"] = draw(st.integers(1, 3))
    if draw(rarely()):
        fields["operators"] = draw(st.lists(st.sampled_from(OPERATORS), min_size=1, unique=True))
    return entry(kind, {channel: draw(st.sampled_from(COSTS)) for channel in offered}, **fields)


@st.composite
def routing_configs(draw: st.DrawFn) -> RoutingConfig:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    providers = {name: draw(provider_entries()) for name in names}
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        channel = draw(st.sampled_from(sorted({c for p in providers.values() for c in p["channels"]})))
        offering = [name for name, p in providers.items() if channel in p["channels"]]
        step: dict[str, Any] = {"channel": channel}
        if draw(st.booleans()):
            step["timeout"] = "60s"
        if draw(st.booleans()):
            step["providers"] = draw(st.lists(st.sampled_from(offering), min_size=1, unique=True))
        steps.append(step)
    triggers = [o.value for o in Outcome if o is not Outcome.DELIVERED] + ["breaker_open"]
    policy = {
        "steps": steps,
        "fallback_on": draw(st.lists(st.sampled_from(triggers), unique=True)),
        "max_attempts": draw(st.integers(2, 6)),
        "learning": draw(st.booleans()),
    }
    document: dict[str, Any] = {
        "providers": providers,
        "policies": {"default": policy},
        "health": {"min_samples": draw(st.integers(1, 3))},
    }
    if draw(st.booleans()):
        document["learning"] = {
            "explore": draw(st.sampled_from([0, 0.05, 0.5])),
            "min_samples": draw(st.integers(1, 5)),
            "hysteresis": draw(st.sampled_from([0, 0.1, 0.3])),
        }
    return RoutingConfig.model_validate(document)


@st.composite
def routing_states(draw: st.DrawFn, config: RoutingConfig) -> RoutingState:
    providers = {}
    learned = {}
    leaders = {}
    channels = sorted({channel for p in config.providers.values() for channel in p.channels})
    for name in config.providers:
        opened = draw(st.sampled_from([0, 0, 0, NOW_MS - 1_000, NOW_MS - 60_000]))
        providers[name] = ProviderState(
            breaker="open" if opened else draw(st.sampled_from(["closed", "half-open"])),
            failures=draw(st.integers(0, 3)),
            opened_at_ms=opened,
            out_of_money=draw(rarely()),
            spent_today=Decimal(draw(st.sampled_from(["0", "0.25", "4.90"]))),
            balance=draw(st.sampled_from([None, None, Decimal("0.15"), Decimal("100")])),
            health={
                channel: ChannelHealth(
                    draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 9000))
                )
                for channel in channels
                if draw(st.booleans())
            },
        )
        for channel in channels:
            for operator in OPERATORS:
                if draw(st.booleans()):
                    trials = draw(st.integers(0, 30))
                    approvals = draw(st.integers(0, trials))
                    learned[(name, channel, operator)] = Conversion(trials, approvals, approvals * 15_000.0)
    for channel in channels:
        for operator in OPERATORS:
            if draw(st.booleans()):
                leaders[leader_key("default", channel, operator)] = draw(
                    st.sampled_from([*config.providers, SKIP])
                )
    return RoutingState(providers, learned=learned, leaders=leaders)


@st.composite
def verifications(draw: st.DrawFn, config: RoutingConfig) -> Verification:
    attempt = draw(st.sampled_from([0, 0, 1, 2, 5]))
    names = sorted(config.providers)
    later = attempt > 0
    return Verification(
        id=draw(st.text("abcdef0123", min_size=1, max_size=8)),
        phone=draw(st.sampled_from(PHONES)),
        policy="default",
        channels=tuple(draw(st.lists(st.sampled_from(list(Channel)), max_size=2, unique=True))),
        code_length=draw(st.integers(4, 6)),
        attempt=attempt,
        attempt_state=draw(st.sampled_from(["failed", "timed_out"])) if later else "",
        step=draw(st.integers(0, 2)) if later else None,
        tried=tuple(draw(st.lists(st.sampled_from(names), max_size=1))) if later else (),
        reason=draw(st.sampled_from([o.value for o in Outcome if o is not Outcome.DELIVERED]))
        if later
        else "",
        delivered=draw(st.integers(0, 1)) if later else 0,
        refs={name: "earlier-call" for name in draw(st.lists(st.sampled_from(names), unique=True))},
    )


def built(config: RoutingConfig) -> dict[str, Provider]:
    return {
        name: inspectable_provider(name, entry) for name, entry in config.providers.items() if entry.enabled
    }


def stated(outcome: Choice | GiveUp) -> tuple[str, ...]:
    """How an explanation states this outcome: its closing line's words that name it."""
    if isinstance(outcome, Choice):
        return ("next attempt", outcome.provider.name, str(outcome.step.channel), str(outcome.step_index))
    return ("refused" if outcome.hard else "gives up", outcome.reason)


def rendered(text: str) -> tuple[str, ...]:
    last = text.splitlines()[-1]
    if found := re.fullmatch(r"next attempt: (\S+), by (\S+) \(step (\d+)\)", last):
        return ("next attempt", *found.groups())
    found = re.match(r"(refused|gives up): (\w+): ", last)
    assert found, last
    return found.group(1), found.group(2)


def marked_in_reached_steps(text: str) -> list[tuple[str, str]]:
    """(step index, provider) of each `->` row under a step the decision reached."""
    marked, step, reached = [], "", False
    for line in text.splitlines():
        if header := re.match(r"step (\d+): ", line):
            step, reached = header.group(1), "if reached later" not in line
        elif reached and line.lstrip().startswith("->"):
            marked.append((step, line.split()[1]))
    return marked


@PROPERTY
@given(st.data())
def test_explain_states_the_decision_next_attempt_returns(data: st.DataObject) -> None:
    config = data.draw(routing_configs())
    state = data.draw(routing_states(config))
    verification = data.draw(verifications(config))

    outcome = next_attempt(
        config, config.policies["default"], built(config), verification, state=state, now_ms=NOW_MS
    )
    text = explain_verification(config, state, verification, now_ms=NOW_MS)

    assert rendered(text) == stated(outcome)
    expected = [(str(outcome.step_index), outcome.provider.name)] if isinstance(outcome, Choice) else []
    assert marked_in_reached_steps(text) == expected


def kazakh_case() -> tuple[RoutingConfig, str]:
    config = RoutingConfig.model_validate(
        {
            "providers": {"telphin": entry("telphin", {Channel.FLASHCALL: "0.30"})},
            "policies": {"default": {"steps": [{"channel": "flashcall"}]}},
        }
    )
    return config, "77011234567"


def test_explain_refuses_a_kazakh_number_as_a_bad_number() -> None:
    config, phone = kazakh_case()

    text = explain(config, RoutingState(), phone=phone, now_ms=NOW_MS)

    assert text.splitlines()[-1].startswith("refused: bad_number: not an assigned Russian number")
    assert "->" not in text
    assert "chosen" not in text
    assert "+7701*****67" in text


def test_next_attempt_refuses_the_kazakh_number_explain_refuses() -> None:
    config, phone = kazakh_case()
    fresh = Verification(id="v-kz", phone=phone, policy="default", channels=(), code_length=4)

    decision = next_attempt(
        config, config.policies["default"], built(config), fresh, state=RoutingState(), now_ms=NOW_MS
    )

    assert decision == GiveUp("bad_number", hard=True)


def test_explain_marks_only_the_provider_of_the_weight_band_the_attempt_goes_to() -> None:
    config = RoutingConfig.model_validate(
        {
            "providers": {
                "light": entry("voicepassword", {Channel.FLASHCALL: "0.30"}, weight=1),
                "heavy": entry("voicepassword", {Channel.FLASHCALL: "0.30"}, weight=3),
            },
            "policies": {"default": {"steps": [{"channel": "flashcall"}]}},
        }
    )

    lines = explain(config, RoutingState(), phone="79991234567", now_ms=NOW_MS).splitlines()

    [chosen] = [line for line in lines if line.lstrip().startswith("->")]
    [other] = [line for line in lines if line != chosen and re.search(" (light|heavy) ", line)]
    assert re.search(r"chosen for (25|75)% of attempts, by weight$", chosen)
    assert re.search(r"takes (25|75)% of attempts, by weight$", other)
    assert lines[-1] == f"next attempt: {chosen.split()[1]}, by flashcall (step 0)"


def test_explain_of_a_number_flashcall_start_blocks_states_the_refusal_and_no_provider() -> None:
    config, _ = kazakh_case()

    text = explain(config, RoutingState(), phone="79990001234", now_ms=NOW_MS, refusal=Refusal("blocked"))

    assert text.splitlines()[-1].startswith(
        "refused: blocked: the number is on the routing file's fraud.blocked"
    )
    assert "->" not in text
    assert "next attempt" not in text


def test_explain_of_a_rate_limited_number_names_the_limit_and_the_wait() -> None:
    config, _ = kazakh_case()
    refusal = Refusal("rate_limited", "per_phone", 120)

    text = explain(config, RoutingState(), phone="79991234567", now_ms=NOW_MS, refusal=refusal)

    assert text.splitlines()[-1].startswith(
        "refused: rate_limited: the per_phone limit is reached: a start is admitted again in 120 s"
    )


def test_explain_of_a_held_range_names_the_range_and_how_long() -> None:
    config, _ = kazakh_case()
    refusal = Refusal("fraud_suspected", None, 900)

    last = explain(config, RoutingState(), phone="79991234567", now_ms=NOW_MS, refusal=refusal).splitlines()[
        -1
    ]

    assert last.startswith("refused: fraud_suspected: the conversion guard holds the range 7999123")
    assert "for 900 s" in last
