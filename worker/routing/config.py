"""routing.yaml: frozen, validated models built by one `load_routing()`.

Errors name the line and the field. Credentials are only ever references to
environment variables (`env:NAME`); every provider's URL can be overridden with
`FLASHCALL_<PROVIDER>_URL` (the sandbox, the tests and the demo rely on it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from worker.core.errors import ConfigurationError, RoutingFileError
from worker.core.verification import Channel, Outcome
from worker.providers.registry import PROVIDER_TYPES, inspectable_provider

__all__ = [
    "CARRIER_OPERATORS",
    "DEFAULT_FALLBACK_ON",
    "FraudConfig",
    "GuardConfig",
    "HealthConfig",
    "LearningConfig",
    "Limits",
    "Policy",
    "ProviderConfig",
    "RateLimit",
    "RoutingConfig",
    "Step",
    "json_schema",
    "load_routing",
    "parse_duration",
    "url_override_variable",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
_LOCATED = re.compile(r"^at ([\w.-]+): (.*)$", re.DOTALL)

#: What moves a verification on to the next provider or step, unless a policy says otherwise.
DEFAULT_FALLBACK_ON: tuple[str, ...] = (
    Outcome.BUSY,
    Outcome.NO_ANSWER,
    Outcome.NOT_ENOUGH_MONEY,
    Outcome.REFUSED,
    Outcome.PROVIDER_ERROR,
    "breaker_open",
    Outcome.TIMEOUT,
)
_FALLBACK_TRIGGERS = frozenset({*(o.value for o in Outcome if o is not Outcome.DELIVERED), "breaker_open"})


def parse_duration(value: object) -> float:
    """'500ms', '5s', '2m', '1h', '1d' or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 500ms, 5s, 2m, 1h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION.match(value)):
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    else:
        raise ValueError("a duration such as 500ms, 5s, 2m, 1h or 1d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a positive, finite number")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
            ],
            "description": "500ms, 5s, 2m, 1h, 1d, or a number of seconds",
        }
    ),
]


class _Frozen(BaseModel):
    # Attribute docstrings become the JSON Schema's descriptions, shown by editors.
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ChannelOffer(_Frozen):
    cost: Decimal = Field(ge=0)
    """Roubles per attempt on this channel, as the provider bills it."""


class BreakerConfig(_Frozen):
    fail_max: int = Field(default=5, ge=1)
    """Consecutive failures (timeouts, 5xx, account errors) that open the breaker, cluster-wide."""
    reset_timeout: Duration = 30.0
    """How long an open breaker stays open before one trial call is let through."""
    slow_call: Duration | None = None
    """Off unless set. A call unanswered this long makes the provider suspect: until calls
    come back, at most fail_max are in flight to it, so that a provider that hangs costs
    few calls before its timeouts open the breaker. Set it well above the slowest normal
    answer as the worker sees it under its heaviest load: a worker that falls behind sees
    every answer late, and a slow_call under that would throttle a healthy provider."""


_PREFIX = r"^7[0-9]{0,10}$"

#: The operator ranges every number falls into without `operators` in routing.yaml, by
#: the carrier its number range was allocated to (worker/routing/operators.py).
CARRIER_OPERATORS: tuple[str, ...] = ("mts", "megafon", "beeline", "t2", "other")


class ProviderConfig(_Frozen):
    type: Annotated[str, WithJsonSchema({"enum": sorted(PROVIDER_TYPES)})]
    """Which API this account speaks."""
    base_url: str
    """The API's root URL; FLASHCALL_<NAME>_URL overrides it."""
    credentials: dict[
        str, Annotated[str, WithJsonSchema({"type": "string", "pattern": _ENV_REF.pattern})]
    ] = Field(default_factory=dict)
    """Each credential as env:VARIABLE_NAME: secrets come only from the environment."""
    timeout: Duration = 5.0
    """The longest one API request may take, connection included."""
    enabled: bool = True
    """false takes the provider out of rotation (and needs no credentials)."""
    channels: dict[Channel, ChannelOffer]
    """The channels this account offers, with their cost."""
    breaker: BreakerConfig = BreakerConfig()
    options: dict[str, str] = Field(default_factory=dict)
    """Provider-specific settings, as strings (see routing.yaml)."""
    prefixes: tuple[Annotated[str, Field(pattern=_PREFIX)], ...] = ()
    """Numbers served, as prefixes of 7XXXXXXXXXX (e.g. "7900"); empty serves every number."""
    daily_budget: Decimal | None = Field(default=None, gt=0)
    """Roubles this provider may be paid per day (Moscow time); spent, it leaves rotation until midnight."""
    weight: int | None = Field(default=None, ge=1)
    """Share of traffic among providers that tie on cost and health; without weights the
    cheaper name wins every tie."""
    operators: tuple[Annotated[str, Field(pattern=_NAME)], ...] = ()
    """Operator ranges this account may call (names from `operators`, or mts, megafon,
    beeline, t2, other); empty allows every range. Learning never overrides it."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("credentials")
    @classmethod
    def _env_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, reference in value.items():
            if not _ENV_REF.match(reference):
                raise ValueError(
                    f"{name}: credentials come only from the environment, write env:VARIABLE_NAME"
                )
        return value

    @field_validator("channels")
    @classmethod
    def _some_channel(cls, value: dict[Channel, ChannelOffer]) -> dict[Channel, ChannelOffer]:
        if not value:
            raise ValueError("a provider offers at least one channel")
        return value

    @model_validator(mode="after")
    def _fits_its_type(self) -> ProviderConfig:
        kind = PROVIDER_TYPES.get(self.type)
        if kind is None:
            raise ValueError(f"type must be one of {', '.join(sorted(PROVIDER_TYPES))}")
        missing = sorted(set(kind.credential_names) - set(self.credentials))
        if missing:
            raise ValueError(f"credentials of a {self.type} provider need {', '.join(missing)}")
        unknown = sorted(set(self.credentials) - set(kind.credential_names))
        if unknown:
            raise ValueError(f"unknown credentials {', '.join(unknown)} for a {self.type} provider")
        unknown = sorted(set(self.options) - set(kind.option_names))
        if unknown:
            raise ValueError(f"unknown options {', '.join(unknown)} for a {self.type} provider")
        unoffered = sorted(set(self.channels) - kind.channels)
        if unoffered:
            raise ValueError(f"a {self.type} provider has no channel {', '.join(unoffered)}")
        # Building one (without credentials, without connecting) checks the option values.
        try:
            sample = inspectable_provider(self.type, self)
        except ConfigurationError as error:
            raise ValueError(str(error).removeprefix(f"provider {self.type}: ")) from None
        unserved = sorted(
            channel
            for channel in self.channels
            if not any(sample.supports(channel, length, "earlier-call") for length in range(4, 7))
        )
        if unserved:
            raise ValueError(f"with these options, a {self.type} provider cannot serve {', '.join(unserved)}")
        return self

    def serves(self, phone: str) -> bool:
        return not self.prefixes or phone.startswith(self.prefixes)

    def credential_variables(self) -> dict[str, str]:
        """credential name -> environment variable that holds it."""
        return {name: reference[len("env:") :] for name, reference in self.credentials.items()}


class Step(_Frozen):
    channel: Channel
    """flashcall, voice or sms."""
    timeout: Duration | None = None
    """How long to wait for the user after delivery before the next step; None waits until expiry."""
    providers: tuple[str, ...] | None = None
    """Restrict this step to these providers."""


class Policy(_Frozen):
    steps: tuple[Step, ...] = Field(min_length=1)
    """Tried in order; each step picks a provider."""
    fallback_on: Annotated[
        frozenset[str], WithJsonSchema({"type": "array", "items": {"enum": sorted(_FALLBACK_TRIGGERS)}})
    ] = frozenset(DEFAULT_FALLBACK_ON)
    """What moves a verification on to the next provider or step; anything else fails it."""
    max_attempts: int = Field(default=6, ge=1, le=20)
    """Calls and SMS per verification, at most."""
    learning: bool = True
    """Rank by learned conversion (when routing.yaml has a `learning` section); false keeps
    this policy on the static ranking: cost adjusted by API health."""
    flashcall_no_answer: Literal["delivered", "fallback"] = "delivered"
    """A flash call the user did not pick up has still shown its number, and so the code:
    `delivered` waits for the code as usual; `fallback` moves on at once."""

    @field_validator("fallback_on")
    @classmethod
    def _known_triggers(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - _FALLBACK_TRIGGERS)
        if unknown:
            raise ValueError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(sorted(_FALLBACK_TRIGGERS))}"
            )
        return value

    def steps_for(self, channels: tuple[Channel, ...]) -> tuple[Step, ...]:
        """The steps of a verification that asked for these channels, in its order (all when empty)."""
        if not channels:
            return self.steps
        by_channel = {step.channel: step for step in reversed(self.steps)}
        return tuple(by_channel.get(channel, Step(channel=channel)) for channel in channels)


class RateLimit(_Frozen):
    limit: int = Field(ge=1)
    """Verifications one number may start..."""
    per: Duration
    """...within this window."""


class Limits(_Frozen):
    """Verifications that may start per window, by what they have in common; a start beyond
    any window of any of these is refused. Only `per_phone` holds by default."""

    per_phone: tuple[RateLimit, ...] = (RateLimit(limit=1, per=120.0), RateLimit(limit=10, per=86400.0))
    """Per number."""
    per_key: tuple[RateLimit, ...] = ()
    """Per `limit_key` of the start request (a user account, say); starts without one are
    not counted."""
    per_ip: tuple[RateLimit, ...] = ()
    """Per `client_ip`; starts without one are not counted."""
    per_network: tuple[RateLimit, ...] = ()
    """Per network of `client_ip`: its /24 (IPv4) or /64 (IPv6)."""
    per_range: tuple[RateLimit, ...] = ()
    """Per number range: the number less its last 4 digits."""
    per_operator: tuple[RateLimit, ...] = ()
    """Per operator range (see `operators`)."""
    overall: tuple[RateLimit, ...] = ()
    """Every start, whatever it is for."""

    @property
    def keyed(self) -> dict[str, tuple[RateLimit, ...]]:
        """The limits set besides `per_phone`, by name."""
        return {
            name: rules
            for name in ("per_key", "per_ip", "per_network", "per_range", "per_operator", "overall")
            if (rules := getattr(self, name))
        }


class GuardConfig(_Frozen):
    """The conversion guard: a number range whose starts rise well above their history while
    few of them are approved is held for a while (docs/routing.md, "fraud")."""

    window: Duration = 600.0
    """The recent stretch a range's starts and approvals are counted over."""
    history: Duration = 86400.0
    """What the window's start rate is compared with."""
    min_starts: int = Field(default=15, ge=1)
    """Starts in the window before a range can be held."""
    rise: float = Field(default=5.0, gt=1)
    """How many times its history's start rate the window's must exceed."""
    min_conversion: float = Field(default=0.2, gt=0, le=1)
    """The share of the window's starts approved below which the rise is suspect."""
    hold: Duration = 900.0
    """The first hold; each further one within the history is twice as long..."""
    max_hold: Duration = 86400.0
    """...up to this."""

    @model_validator(mode="after")
    def _consistent(self) -> GuardConfig:
        if self.history <= self.window:
            raise ValueError("history must be longer than window")
        if self.max_hold < self.hold:
            raise ValueError("max_hold must be at least hold")
        return self

    @property
    def published(self) -> dict[str, float]:
        """As flashcall_start takes it: durations in milliseconds."""
        return {
            "window": int(self.window * 1000),
            "history": int(self.history * 1000),
            "min_starts": self.min_starts,
            "rise": self.rise,
            "min_conversion": self.min_conversion,
            "hold": int(self.hold * 1000),
            "max_hold": int(self.max_hold * 1000),
        }


class FraudConfig(_Frozen):
    """Numbers and number ranges, each a prefix of 7XXXXXXXXXX (a whole number is one),
    that the guards before any paid call treat apart; the longest prefix listed decides."""

    safe: tuple[Annotated[str, Field(pattern=_PREFIX)], ...] = ()
    """Held by no limit but their own number's: test numbers, a partner's range."""
    blocked: tuple[Annotated[str, Field(pattern=_PREFIX)], ...] = ()
    """Never called: a start is refused (status failed, reason blocked)."""
    guard: GuardConfig | None = None
    """Off unless set."""

    @model_validator(mode="after")
    def _listed_once(self) -> FraudConfig:
        both = sorted(set(self.safe) & set(self.blocked))
        if both:
            raise ValueError(f"{', '.join(both)} is both safe and blocked: list it once")
        return self

    @property
    def lists(self) -> dict[str, str]:
        """Each prefix listed and its list."""
        return {**{prefix: "safe" for prefix in self.safe}, **{prefix: "blocked" for prefix in self.blocked}}


class HealthConfig(_Frozen):
    window: Duration = 300.0
    """How far back success rates and latencies are measured."""
    min_samples: int = Field(default=20, ge=1)
    """Attempts a provider needs in the window before its health moves it in the ranking."""
    latency_cost: Decimal = Field(default=Decimal("0.05"), ge=0)
    """Roubles one second of mean API latency is worth when ranking providers."""


class LearningConfig(_Frozen):
    explore: float = Field(default=0.05, ge=0, le=0.5)
    """Share of attempts given to a candidate that is not leading, so that its estimate
    stays fresh."""
    min_samples: int = Field(default=20, ge=1)
    """Observed attempts an estimate needs before it can move traffic."""
    memory: int = Field(default=50, ge=2)
    """An estimate weighs about this many most recent attempts: smaller reacts faster,
    larger is steadier."""
    half_life: Duration = 86400.0
    """An estimate left unobserved fades by half in this long. Exploration must observe
    each candidate more often than that for its estimate to stay above min_samples."""
    hysteresis: float = Field(default=0.1, ge=0, le=1)
    """A challenger replaces the leading choice only when it costs this much less per
    approved verification (0.1: 10% less), so that traffic does not flap."""

    @property
    def recent_memory(self) -> int:
        """The short memory of a provider's recent conversion over every range, which
        shows a change (a degradation, a recovery) before the long estimates move."""
        return max(5, self.memory // 5)

    @property
    def spec(self) -> str:
        """How the library learns an attempt's outcome: '<memory>:<half-life ms>:<recent memory>'."""
        return f"{self.memory}:{int(self.half_life * 1000)}:{self.recent_memory}"


class RoutingConfig(_Frozen):
    """flashcall-router's routing.yaml."""

    providers: dict[Annotated[str, Field(pattern=_NAME)], ProviderConfig] = Field(min_length=1)
    """Provider accounts, by the name metrics, logs and events use."""
    policies: dict[Annotated[str, Field(pattern=_NAME)], Policy]
    """Ways to verify a number; a start request names one, or gets `default`."""
    limits: Limits = Limits()
    health: HealthConfig = HealthConfig()
    operators: dict[
        Annotated[str, Field(pattern=_NAME)], tuple[Annotated[str, Field(pattern=_PREFIX)], ...]
    ] = Field(default_factory=dict)
    """Operator ranges by name, as prefixes of 7XXXXXXXXXX; numbers outside them are
    placed by their carrier (mts, megafon, beeline, t2, other)."""
    learning: LearningConfig | None = None
    """Rank by what attempts convert into approvals; absent, ranking is static."""
    fraud: FraudConfig = FraudConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        if "default" not in self.policies:
            raise ValueError("at policies: policies must include one named default")
        for policy_name, policy in self.policies.items():
            for index, step in enumerate(policy.steps):
                names = step.providers or tuple(self.providers)
                unknown = [name for name in names if name not in self.providers]
                if unknown:
                    where = f"policies.{policy_name}.steps.{index}.providers"
                    raise ValueError(f"at {where}: unknown provider {', '.join(unknown)}")
                if not any(step.channel in self.providers[name].channels for name in names):
                    raise ValueError(
                        f"at policies.{policy_name}.steps.{index}.channel: no provider offers {step.channel}"
                    )
        known = {*CARRIER_OPERATORS, *self.operators}
        for name, provider in self.providers.items():
            unknown = sorted(set(provider.operators) - known)
            if unknown:
                raise ValueError(
                    f"at providers.{name}.operators: unknown operator range {', '.join(unknown)}; "
                    f"name it under operators, or use {', '.join(CARRIER_OPERATORS)}"
                )
        return self

    def unset_credentials(self, environ: Mapping[str, str]) -> list[str]:
        """The credential variables a worker would need that `environ` lacks, sorted: those of
        enabled providers only, since a disabled one is never built and needs none."""
        return sorted(
            {
                variable
                for entry in self.providers.values()
                if entry.enabled
                for variable in entry.credential_variables().values()
                if not environ.get(variable)
            }
        )


def url_override_variable(provider_name: str) -> str:
    return "FLASHCALL_" + re.sub(r"[^A-Z0-9]", "_", provider_name.upper()) + "_URL"


def load_routing(path: Path | str, environ: Mapping[str, str] | None = None) -> RoutingConfig:
    """Read, validate and return a routing file; RoutingFileError names the line and field."""
    env = os.environ if environ is None else environ
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RoutingFileError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise RoutingFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RoutingFileError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    except (ValueError, AttributeError) as error:
        # PyYAML's constructors raise these for a scalar they cannot build: `!!int x`, a date
        # such as 2026-13-45, an integer of thousands of digits (ValueError), `!!timestamp x`
        # (AttributeError).
        raise RoutingFileError(f"{path}: not valid YAML: {error}") from None
    except RecursionError:
        # PyYAML's composer recurses once per level of nesting.
        raise RoutingFileError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise RoutingFileError(f"{path}:1: expected a mapping with providers and policies")
    providers = data.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            override = env.get(url_override_variable(str(name)))
            if override and isinstance(provider, dict):
                provider["base_url"] = override
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as error:
        lines = _line_index(node)
        problems = []
        for item in error.errors():
            location = tuple(str(part) for part in item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            # Checks across sections name their place themselves: "at a.b.c: ...".
            if found := _LOCATED.match(message):
                location = (*location, *found.group(1).split("."))
                message = found.group(2)
            line = _nearest_line(lines, location)
            field = ".".join(location) or "(top level)"
            problems.append(f"{path}:{line}: {field}: {message}")
        raise RoutingFileError("\n".join(problems)) from None


def _line_index(node: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Path of every mapping key and sequence item -> its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(current: yaml.Node, path: tuple[str, ...]) -> None:
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                child = (*path, str(key.value))
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(current, yaml.SequenceNode):
            for index, value in enumerate(current.value):
                walk(value, (*path, str(index)))

    if node is not None:
        walk(node, ())
    return lines


def _nearest_line(lines: Mapping[tuple[str, ...], int], location: tuple[str, ...]) -> int:
    for end in range(len(location), -1, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return 1


def json_schema() -> str:
    """routing.yaml's JSON Schema, for editor completion (docs/routing.schema.json)."""
    schema = RoutingConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
