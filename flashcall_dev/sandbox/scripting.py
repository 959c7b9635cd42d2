"""Reading the control API's JSON: scripts of behaviours, balances and latency.

Every rejection names the offending field, so a test with a typo in its script fails
at once instead of silently running the normal behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from flashcall_dev.sandbox.shared import ProviderSpec
from flashcall_dev.sandbox.state import Behaviour

__all__ = [
    "InvalidInputError",
    "Script",
    "parse_balance",
    "parse_latency",
    "parse_script",
]

_MIN_HTTP_STATUS = 400
_MAX_HTTP_STATUS = 599


class InvalidInputError(ValueError):
    """A control request the sandbox refuses; `field` is a path into its JSON body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Script:
    provider: ProviderSpec
    number: str | None
    steps: tuple[Behaviour, ...]
    chance: tuple[float, Behaviour] | None = None
    """After the steps: (probability, behaviour) for each further request."""


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(field, "must be a JSON object")
    return value


def _provider(body: Mapping[str, Any], providers: Mapping[str, ProviderSpec]) -> ProviderSpec:
    name = body.get("provider")
    if not isinstance(name, str) or name not in providers:
        raise InvalidInputError("provider", f"must be one of {sorted(providers)}")
    return providers[name]


def _milliseconds(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(field, "must be a non-negative integer of milliseconds")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(field, "must be true or false")
    return value


def _one_of(value: Any, field: str, allowed: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(field, f"must be one of {sorted(allowed)}")
    return value


def _http_status(value: Any, field: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not _MIN_HTTP_STATUS <= value <= _MAX_HTTP_STATUS
    ):
        raise InvalidInputError(
            field, f"must be an HTTP error status, {_MIN_HTTP_STATUS}..{_MAX_HTTP_STATUS}"
        )
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(field, "must be a string")
    return value


def _behaviour(value: Any, spec: ProviderSpec, field: str) -> Behaviour:
    raw = _object(value, field)
    known: dict[str, Callable[[Any, str], object]] = {
        "latency_ms": _milliseconds,
        "callback_delay_ms": _milliseconds,
        "error_code": lambda v, f: _one_of(v, f, spec.error_codes),
        "state": lambda v, f: _one_of(v, f, spec.states),
        "http_status": _http_status,
        "body": _text,
        "disconnect": _flag,
        "hang": _flag,
        "trickle": _flag,
        "deliver": _flag,
    }
    fields: dict[str, Any] = {}
    for key, item in raw.items():
        check = known.get(key)
        if check is None:
            raise InvalidInputError(f"{field}.{key}", "is not a behaviour field")
        fields[key] = check(item, f"{field}.{key}")
    behaviour = Behaviour(**fields)
    # Each of these is a whole answer; two of them in one step would make the outcome a guess.
    answers = [
        name
        for name, chosen in (
            ("hang", behaviour.hang),
            ("trickle", behaviour.trickle),
            ("disconnect", behaviour.disconnect),
            ("http_status/body", behaviour.http_status is not None or behaviour.body is not None),
            ("error_code", behaviour.error_code is not None),
        )
        if chosen
    ]
    if len(answers) > 1:
        raise InvalidInputError(field, f"choose one of {', '.join(answers)}")
    return behaviour


def parse_script(value: Any, providers: Mapping[str, ProviderSpec]) -> Script:
    body = _object(value, "body")
    spec = _provider(body, providers)
    number = body.get("number")
    if number is not None and (not isinstance(number, str) or not number):
        raise InvalidInputError("number", "must be a non-empty string or absent")
    steps = body.get("steps", [])
    if not isinstance(steps, list):
        raise InvalidInputError("steps", "must be a list of behaviours")
    unknown = sorted(set(body) - {"provider", "number", "steps", "chance"})
    if unknown:
        raise InvalidInputError(unknown[0], "is not a script field")
    return Script(
        provider=spec,
        number=number,
        steps=tuple(_behaviour(step, spec, f"steps[{i}]") for i, step in enumerate(steps)),
        chance=_chance(body["chance"], spec) if "chance" in body else None,
    )


def _chance(value: Any, spec: ProviderSpec) -> tuple[float, Behaviour]:
    raw = _object(value, "chance")
    probability = raw.get("probability")
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability <= 1:
        raise InvalidInputError("chance.probability", "must be a number from 0 to 1")
    unknown = sorted(set(raw) - {"probability", "behaviour"})
    if unknown:
        raise InvalidInputError(f"chance.{unknown[0]}", "is not a chance field")
    return float(probability), _behaviour(raw.get("behaviour"), spec, "chance.behaviour")


def parse_balance(value: Any, providers: Mapping[str, ProviderSpec]) -> tuple[ProviderSpec, Decimal]:
    body = _object(value, "body")
    spec = _provider(body, providers)
    raw = body.get("balance")
    try:
        balance = Decimal(raw) if isinstance(raw, str) else None
    except InvalidOperation:
        balance = None
    if balance is None or not balance.is_finite():
        raise InvalidInputError("balance", 'must be a decimal string such as "0.00"')
    return spec, balance


def parse_latency(value: Any) -> int:
    return _milliseconds(_object(value, "body").get("latency_ms"), "latency_ms")
