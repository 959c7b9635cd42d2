"""Telphin Flash Calls imitation, to the letter of the provider's document
(shared/providers/telphin-flashcall.txt).

Served on its own port: a client whose base URL is `http://host:port` in place of
`https://flashcall.telphin.ru` posts to `/` (place a flash call) and `/auth/` (check the code
the user typed). Both answer HTTP 200 with `{"status": "succes", ...}` (sic) or
`{"status": "error", "description": "<code>"}`, as the real one.

Sandbox fixtures and the decisions where the document is silent:

- Credentials travel in the JSON body, as documented: `app_id` `sandbox-telphin-app-id`,
  `app_secret` `sandbox-telphin-app-secret`.
- Validation, in this order: a body that is not a JSON object, or a documented field missing
  or not a JSON string, is `parameters_error`; wrong credentials are `invalid_client`; a number
  other than `+7` or `8` followed by 10 digits is `direction_error` (a check has no such code:
  there, no code exists for it). Fields the document does not name are ignored.
- A call: 4 random digits, rung from a caller number `7495…` ending in them; the user's inbox
  shows the missed call. The answer echoes the number as sent. Nothing is charged: the
  document names no price and no balance.
- Telphin's limits, per number (`+7…` and `8…` are one number), counting placed calls only: a
  call within 120 s of the last is `one_call_for_two_minutes`; an 11th within a rolling 24 h is
  `ten_calls_per_day`. The 2-minute limit is checked first.
- Codes: a new call replaces the number's code. A code lives 300 s (`code_lifetime_expired`)
  and takes 3 wrong checks (`invalid_code`); any check after those is `auth_attempts_ended`,
  even with the right code. A code that matched is spent: like a number never called, further
  checks answer `auth_code_does_not_exist`. Checked in that order: exists, lifetime, attempts.
- Settings, `POST /_sandbox/settings {"provider": "telphin", ...}`: `code_lifetime_s`,
  `call_interval_s` (seconds, >= 0), `calls_per_day`, `auth_attempts` (integers, >= 1). Fields
  left out take their defaults again, so `{"provider": "telphin"}` restores all of them. A reset
  keeps the settings.
- Scripts: a step applies to the number's next request, a call or a check alike. `error_code`
  is a code of the call's table, answered verbatim by whichever request takes the step
  (`invalid_client`, `parameters_error` and `service_is_not_connected` are in the check's table
  too); the check's own codes come from the state above. `deliver: false` places the call (it
  counts against the limits and has a code) but the phone never rings. `latency_ms`,
  `http_status`, `body`, `disconnect` and `hang` work as for every provider. Telphin reports no
  call states: a script cannot name one, and `callback_delay_ms` does nothing.
- The imitation keeps no memory of its own: limits, codes and attempts are read from the
  shared state's records and deliveries, so `/_sandbox/reset` forgets them with the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

from flashcall_dev.sandbox.codes import caller_ending_in, random_digits
from flashcall_dev.sandbox.faults import delay, faulty_answer
from flashcall_dev.sandbox.scripting import InvalidInputError
from flashcall_dev.sandbox.shared import SANDBOX, ProviderSpec, Sandbox
from flashcall_dev.sandbox.state import Behaviour, Delivery, Message, Record, SandboxState

__all__ = ["APP_ID", "APP_SECRET", "PROVIDER", "Settings", "parse_settings"]

NAME = "telphin"
APP_ID = "sandbox-telphin-app-id"
APP_SECRET = "sandbox-telphin-app-secret"
# No price or balance in the document: the account is never charged.
DEFAULT_BALANCE = Decimal("0.00")
PRICE = Decimal("0.00")
DAY_S = 86_400

FLASHCALL = "flashcall"
AUTH = "auth"
SUCCESS = "succes"  # sic, as the document spells it
SEND_ERRORS = frozenset(
    {
        "invalid_client",
        "one_call_for_two_minutes",
        "ten_calls_per_day",
        "parameters_error",
        "direction_error",
        "service_is_not_connected",
    }
)

_CODE_LENGTH = 4
# A flash call is dropped before it can be answered: the phone shows a missed call.
_CALL_STATE = "NO ANSWER"
_NUMBER = re.compile(r"(?:\+7|8)([0-9]{10})")
_CREDENTIALS = ("app_id", "app_secret")


@dataclass(frozen=True, slots=True)
class Settings:
    """Telphin's limits and code rules; the defaults are the document's limits and our picks."""

    code_lifetime_s: float = 300.0
    call_interval_s: float = 120.0
    calls_per_day: int = 10
    auth_attempts: int = 3

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


DEFAULT_SETTINGS = Settings()


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(field, "must be a non-negative number of seconds")
    return float(value)


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(field, "must be a positive integer")
    return value


_SETTING_READERS: Mapping[str, Callable[[Any, str], float | int]] = {
    "code_lifetime_s": _seconds,
    "call_interval_s": _seconds,
    "calls_per_day": _count,
    "auth_attempts": _count,
}


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """The settings a control request sets; each field left out takes its default."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        read = _SETTING_READERS.get(key)
        if read is None:
            raise InvalidInputError(key, f"is not a {NAME} setting")
        values[key] = read(value, key)
    return Settings(**values)


def _settings(sandbox: Sandbox) -> Settings:
    current = sandbox.settings.get(NAME)
    return current if isinstance(current, Settings) else DEFAULT_SETTINGS


class _RefusedError(Exception):
    """Ends a request with the provider's error answer; `code` is verbatim from its document."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _error(code: str) -> dict[str, str]:
    return {"status": "error", "description": code}


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _as_received(raw: bytes, payload: dict[str, Any] | None) -> object:
    return payload if payload is not None else raw.decode("utf-8", errors="replace")


def _national(number: str) -> str | None:
    """7XXXXXXXXXX for a number in a form Telphin calls (+7… or 8…), else None."""
    match = _NUMBER.fullmatch(number)
    return "7" + match.group(1) if match else None


def _key(payload: dict[str, Any] | None) -> str | None:
    """The number a request is about, as records, scripts and inboxes know it: the national
    form of a number Telphin would call (so tests look it up as 7XXXXXXXXXX), else as sent."""
    number = payload.get("number") if payload is not None else None
    if not isinstance(number, str) or not number:
        return None
    return _national(number) or number


def _authorised(payload: dict[str, Any] | None, names: tuple[str, ...]) -> dict[str, str]:
    """The request's documented fields, once all are strings and the credentials are right."""
    if payload is None:
        raise _RefusedError("parameters_error")
    fields: dict[str, str] = {}
    for name in (*_CREDENTIALS, *names):
        value = payload.get(name)
        if not isinstance(value, str):
            raise _RefusedError("parameters_error")
        fields[name] = value
    if (fields["app_id"], fields["app_secret"]) != (APP_ID, APP_SECRET):
        raise _RefusedError("invalid_client")
    return fields


def _calls(state: SandboxState, number: str) -> list[Delivery]:
    """Calls placed to the number, oldest first."""
    return [
        state.deliveries[record.id]
        for record in state.find_records(provider=NAME, number=number)
        if record.kind == FLASHCALL and record.id is not None
    ]


def _latest_call(state: SandboxState, number: str) -> tuple[Delivery | None, list[Record]]:
    """The number's latest call and the checks received since it."""
    call: Delivery | None = None
    checks: list[Record] = []
    for record in state.find_records(provider=NAME, number=number):
        if record.kind == FLASHCALL and record.id is not None:
            call, checks = state.deliveries[record.id], []
        elif record.kind == AUTH and call is not None:
            checks.append(record)
    return call, checks


def _call(
    sandbox: Sandbox, payload: dict[str, Any] | None, behaviour: Behaviour, record: Record
) -> dict[str, str]:
    fields = _authorised(payload, ("number",))
    number = _national(fields["number"])
    if number is None:
        raise _RefusedError("direction_error")
    state, settings = sandbox.state, _settings(sandbox)
    now = state.now()
    calls = _calls(state, number)
    if calls and now < calls[-1].placed_at + settings.call_interval_s:
        raise _RefusedError("one_call_for_two_minutes")
    if sum(1 for call in calls if now < call.placed_at + DAY_S) >= settings.calls_per_day:
        raise _RefusedError("ten_calls_per_day")
    code = random_digits(state.rng, _CODE_LENGTH)
    caller = caller_ending_in(state.rng, code)
    delivery = Delivery(
        id=state.new_id(),
        provider=NAME,
        channel=FLASHCALL,
        number=number,
        code=code,
        caller=caller,
        price=PRICE,
        state=_CALL_STATE,
        placed_at=now,
        settles_at=now,
        callback_url=None,
    )
    state.add_delivery(delivery)
    record.id, record.state = delivery.id, SUCCESS
    if behaviour.deliver:
        state.deliver(
            number, Message(provider=NAME, channel=FLASHCALL, sender=caller, code=code, text=None, at=now)
        )
    return {"status": SUCCESS, "number": fields["number"]}


def _check(
    sandbox: Sandbox, payload: dict[str, Any] | None, behaviour: Behaviour, record: Record
) -> dict[str, str]:
    fields = _authorised(payload, ("number", "auth_code"))
    number = _national(fields["number"])
    state, settings = sandbox.state, _settings(sandbox)
    call, checks = _latest_call(state, number) if number is not None else (None, [])
    if call is None or any(check.state == SUCCESS for check in checks):
        raise _RefusedError("auth_code_does_not_exist")
    if state.now() >= call.placed_at + settings.code_lifetime_s:
        raise _RefusedError("code_lifetime_expired")
    if sum(1 for check in checks if check.error_code == "invalid_code") >= settings.auth_attempts:
        raise _RefusedError("auth_attempts_ended")
    if fields["auth_code"] != call.code:
        raise _RefusedError("invalid_code")
    # Marks the code spent: _latest_call hands this record to every later check.
    record.state = SUCCESS
    return {"status": SUCCESS, "number": fields["number"], "auth_code": fields["auth_code"]}


_Handler = Callable[[Sandbox, dict[str, Any] | None, Behaviour, Record], dict[str, str]]


async def _serve(request: web.Request, kind: str, handle: _Handler) -> web.StreamResponse:
    """Record the request, play the number's next scripted step, else answer as Telphin would."""
    sandbox = request.config_dict[SANDBOX]
    state = sandbox.state
    raw = await request.read()
    payload = _decode(raw)
    number = _key(payload)
    # The credentials are in the body (the sandbox's fixed ones); no header carries any.
    record = state.add_record(NAME, request.path, kind, number, body=_as_received(raw, payload))
    behaviour = state.next_behaviour(NAME, number)
    await delay(behaviour.latency_ms if behaviour.latency_ms is not None else state.latency_ms)
    fault = await faulty_answer(request, behaviour, record, sandbox.closing)
    if fault is not None:
        return fault
    try:
        if behaviour.error_code is not None:
            raise _RefusedError(behaviour.error_code)
        answer = handle(sandbox, payload, behaviour, record)
    except _RefusedError as refusal:
        record.error_code = refusal.code
        answer = _error(refusal.code)
    record.http_status = HTTPStatus.OK.value
    return web.json_response(answer)


def _route(kind: str, handle: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def route(request: web.Request) -> web.StreamResponse:
        return await _serve(request, kind, handle)

    return route


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/", _route(FLASHCALL, _call))
    app.router.add_post("/auth/", _route(AUTH, _check))
    return app


PROVIDER = ProviderSpec(
    name=NAME,
    default_balance=DEFAULT_BALANCE,
    error_codes=SEND_ERRORS,
    states=frozenset(),
    build_app=build_app,
    credentials={"app_id": APP_ID, "app_secret": APP_SECRET},
    settings=parse_settings,
)
