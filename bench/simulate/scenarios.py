"""The simulated scenarios: providers, prices, true delivery rates, and what changes mid-run.

Prices are the sandbox's where the sandbox bills (VoicePassword and MobilGroup report
0.35 a call, 3.30 an SMS), so that what routing ranks by is what the verification is
charged; Telphin and the gateway report no price, and their configured cost is the bill.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from bench.simulate.world import OPERATORS
from worker.core.verification import Channel

__all__ = [
    "COSTS",
    "LEARNING",
    "SCENARIOS",
    "Change",
    "Scenario",
    "base_rates",
    "routing_document",
]

FLASH, VOICE, SMS = Channel.FLASHCALL, Channel.VOICE, Channel.SMS

#: (provider, channel) -> roubles per attempt.
COSTS: Mapping[tuple[str, Channel], Decimal] = {
    ("gateway", FLASH): Decimal("0.25"),
    ("telphin", FLASH): Decimal("0.30"),
    ("voicepassword", FLASH): Decimal("0.35"),
    ("voicepassword", VOICE): Decimal("0.35"),
    ("voicepassword", SMS): Decimal("3.30"),
    ("mobilgroup", FLASH): Decimal("0.35"),
    ("mobilgroup", VOICE): Decimal("0.35"),
    ("mobilgroup", SMS): Decimal("3.30"),
}

#: Chance that a delivered flash call reaches the user, per provider and operator range:
#: the cheapest (gateway) converts worst, worst of all on t2; Telphin is the best buy.
_FLASH_RATES: Mapping[str, Mapping[str, float]] = {
    "gateway": {"mts": 0.72, "megafon": 0.70, "beeline": 0.68, "t2": 0.45},
    "telphin": {"mts": 0.90, "megafon": 0.88, "beeline": 0.86, "t2": 0.84},
    "voicepassword": {"mts": 0.92, "megafon": 0.91, "beeline": 0.90, "t2": 0.88},
    "mobilgroup": {"mts": 0.90, "megafon": 0.90, "beeline": 0.91, "t2": 0.86},
}
_VOICE_RATES = {"voicepassword": 0.95, "mobilgroup": 0.94}
_SMS_RATES = {"voicepassword": 0.97, "mobilgroup": 0.97}

#: The learned router's learning section: empty, so that it runs on routing.yaml's documented
#: defaults, whatever they are now (`--learning` overrides them).
LEARNING: Mapping[str, Any] = {}
#: The oracle's, over the learned router's: nothing to explore and no reason to hesitate.
ORACLE_LEARNING: Mapping[str, Any] = {"explore": 0.0, "hysteresis": 0.0}


def base_rates() -> dict[tuple[str, Channel, str], float]:
    rates: dict[tuple[str, Channel, str], float] = {}
    for provider, by_operator in _FLASH_RATES.items():
        for operator, rate in by_operator.items():
            rates[(provider, FLASH, operator)] = rate
    for operator in OPERATORS:
        for provider, rate in _VOICE_RATES.items():
            rates[(provider, VOICE, operator)] = rate
        for provider, rate in _SMS_RATES.items():
            rates[(provider, SMS, operator)] = rate
    return rates


@dataclass(frozen=True, slots=True)
class Change:
    """Something that happens to the world at a point of the run."""

    at: float
    """Fraction of the run's arrivals before it happens."""
    kind: Literal["rate", "restore", "outage", "outage_end", "price"]
    """rate: a new delivery rate; restore: the scenario's own rates again; outage: the provider
    answers HTTP 503 to every request until outage_end; price: a new cost in routing.yaml."""
    provider: str
    channel: Channel
    label: str
    operators: tuple[str, ...] = OPERATORS
    value: float = 0.0
    """The new delivery rate (rate) or cost in roubles (price)."""
    expect: Literal["leave", "return"] | None = None
    """What the routers should do about it, measured as their reaction: move traffic off the
    provider (leave) or back to it (return); None when there is nothing to measure."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    what: str
    changes: tuple[Change, ...] = ()
    rates: Mapping[tuple[str, Channel, str], float] = field(default_factory=base_rates)
    watch: tuple[str, tuple[str, ...]] = ("telphin", OPERATORS)
    """Whose share of first flash calls the plot follows ("-": the flash step skipped), and
    in which operator ranges."""


def _t2_flash_fails() -> dict[tuple[str, Channel, str], float]:
    rates = base_rates()
    for provider in _FLASH_RATES:
        rates[(provider, FLASH, "t2")] = 0.05
    return rates


SCENARIOS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "steady",
            "Steady state",
            "Nothing changes; the cheapest flash provider (gateway, 0.25) converts worst, "
            "Telphin (0.30) best per rouble.",
        ),
        Scenario(
            "outage",
            "Provider outage",
            "Telphin answers HTTP 503 to every call from 40% to 70% of the run.",
            changes=(
                Change(0.4, "outage", "telphin", FLASH, "Telphin down (503)", expect="leave"),
                Change(0.7, "outage_end", "telphin", FLASH, "Telphin back", expect="return"),
            ),
        ),
        Scenario(
            "degradation",
            "Silent degradation",
            "From 40% of the run Telphin's API still accepts flash calls but only 10% reach "
            "users (was 84-90%); it recovers at 75%.",
            changes=(
                Change(
                    0.4,
                    "rate",
                    "telphin",
                    FLASH,
                    "Telphin flash calls stop arriving",
                    value=0.10,
                    expect="leave",
                ),
                Change(0.75, "restore", "telphin", FLASH, "Telphin recovers", expect="return"),
            ),
        ),
        Scenario(
            "price",
            "Price change",
            "At 50% of the run Telphin's flash call goes from 0.30 to 0.60 (a new routing.yaml).",
            changes=(
                Change(0.5, "price", "telphin", FLASH, "Telphin 0.30 -> 0.60", value=0.60, expect="leave"),
            ),
        ),
        Scenario(
            "operator",
            "Operator range without flash calls",
            "Flash calls to t2 numbers reach 5% of users through every provider; voice and SMS "
            "work as elsewhere.",
            rates=_t2_flash_fails(),
            watch=("-", ("t2",)),
        ),
    )
}


def routing_document(
    costs: Mapping[tuple[str, Channel], Decimal], learning: Mapping[str, Any] | None
) -> dict[str, Any]:
    """routing.yaml of a simulated router (URLs and credentials come from the environment)."""
    credentials = {
        "voicepassword": {"api_key": "env:SIM_VOICEPASSWORD_API_KEY"},
        "mobilgroup": {"api_key": "env:SIM_MOBILGROUP_API_KEY"},
        "telphin": {"app_id": "env:SIM_TELPHIN_APP_ID", "app_secret": "env:SIM_TELPHIN_APP_SECRET"},
        "gateway": {"login": "env:SIM_GATEWAY_LOGIN", "password": "env:SIM_GATEWAY_PASSWORD"},
    }
    options = {"gateway": {"variant": "flashcall", "ttl": "1"}}
    providers: dict[str, Any] = {}
    for name, creds in credentials.items():
        channels = {str(channel): {"cost": str(cost)} for (p, channel), cost in costs.items() if p == name}
        providers[name] = {
            "type": name,
            "base_url": "https://sandbox.invalid",
            "credentials": creds,
            "timeout": "5s",
            "channels": channels,
            "breaker": {"fail_max": 5, "reset_timeout": "30s"},
            **({"options": options[name]} if name in options else {}),
        }
    document: dict[str, Any] = {
        "providers": providers,
        "policies": {
            "default": {
                "steps": [
                    {"channel": "flashcall", "timeout": "60s"},
                    {"channel": "voice", "timeout": "90s"},
                    {"channel": "sms"},
                ],
                "max_attempts": 6,
            }
        },
        # Every number starts once: per-number limits must never be what the run measures.
        "limits": {"per_phone": [{"limit": 1000, "per": "1s"}]},
        # API latency here is the sandbox's on this machine, not the world's: it must not rank.
        "health": {"window": "5m", "min_samples": 20, "latency_cost": 0},
    }
    if learning is not None:
        document["learning"] = dict(learning)
    return document
