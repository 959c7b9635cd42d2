"""VoicePassword imitation, to the letter of the provider's document (shared/providers/voicepassword.txt).

Served on its own port: a client whose base URL is `http://host:port` in place of
`https://vp.voicepassword.ru` posts to `/api/voice-password/send/` (flash call, voice code,
SMS follow-up) and `/api/voice-password/get/` (balance, call state, daily statistics). Both answer
HTTP 200 with `{"result": "ok", ...}` or `{"result": "error", "error_code": "..."}`, as the real one.

Sandbox fixtures:

- API key `sandbox-voicepassword-key`, in the `Authorization` header or in `security.apiKey`.
- Caller numbers registered for `voice.ani` (`voice.api` in the document's table): 74950000000, 74951111111.
- Balance 1000.00 Rub; prices: flash call 0.35, voice 0.35, SMS 3.30.
- Unless scripted, a flash call ends NO ANSWER (the user sees a missed call and does not pick up),
  a voice call ANSWERED, an SMS DELIVERED, each 300 ms after it was placed; until then `/get/`
  reports the call as "Дозвон". A scripted state from the other vocabulary (an SMS state for a
  call) leaves the default in place.
- An SMS follow-up (`{"sms": {"id": ...}}`) names no number, code or call options of its own
  (any of them is `unknown_request`); without a `callback_url` it reports to its call's one.
- `/get/` `state` answers for SMS ids too ("Доставлено", ...); `daily` lists calls only, as documented.
- Numeric options must be JSON strings (`"capacity": "4"`); a JSON number is `unknown_request`,
  stricter than the real service, so that adapter bugs surface here.
- Dates are Moscow time, where the provider lives.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

from worker.sandbox.codes import caller_ending_in, random_digits
from worker.sandbox.faults import delay, faulty_answer
from worker.sandbox.runtime import SANDBOX, ProviderSpec, Sandbox
from worker.sandbox.state import Behaviour, Delivery, Message, Record, SandboxState

__all__ = ["API_KEY", "PROVIDER", "REGISTERED_ANI"]

NAME = "voicepassword"
API_KEY = "sandbox-voicepassword-key"
REGISTERED_ANI = frozenset({"74950000000", "74951111111"})
DEFAULT_BALANCE = Decimal("1000.00")
CURRENCY = "Rub"
DEFAULT_CALLBACK_DELAY_MS = 300
SMS_SENDER = "VoicePassword"

FLASHCALL = "flashcall"
VOICE = "voice"
SMS = "sms"

PRICES = {FLASHCALL: Decimal("0.35"), VOICE: Decimal("0.35"), SMS: Decimal("3.30")}
CALL_STATES = frozenset({"ANSWERED", "BUSY", "NO ANSWER", "FAIL", "CANCEL"})
SMS_STATES = frozenset({"QUEUED", "SEND", "DELIVERED", "NOT DELIVERED", "FAIL"})
SEND_ERRORS = frozenset(
    {
        "unknown_request",
        "authorisation_failed",
        "user_disabled",
        "number_is_empty",
        "number_not_valid",
        "number_not_permitted",
        "number_in_spam_list",
        "not_enough_money",
        "ani_phone_not_valid",
        "code_not_valid",
    }
)

_STATES = {FLASHCALL: CALL_STATES, VOICE: CALL_STATES, SMS: SMS_STATES}
_DEFAULT_STATES = {FLASHCALL: "NO ANSWER", VOICE: "ANSWERED", SMS: "DELIVERED"}
# Final states in which the user's phone shows the code: a missed flash call still shows its number.
_REACHES_PHONE = {
    FLASHCALL: frozenset({"ANSWERED", "NO ANSWER"}),
    VOICE: frozenset({"ANSWERED"}),
    SMS: frozenset({"DELIVERED"}),
}
_RUSSIAN_STATES = {
    "ANSWERED": "Успешно",
    "BUSY": "Занято",
    "NO ANSWER": "Нет ответа",
    "FAIL": "Ошибка",
    "CANCEL": "Отменен",
    "QUEUED": "Передано шлюзу",
    "SEND": "Отправлено",
    "DELIVERED": "Доставлено",
    "NOT DELIVERED": "Не доставлено",
}
_IN_PROGRESS = {FLASHCALL: "Дозвон", VOICE: "Дозвон", SMS: "Передано шлюзу"}
_SERVICES = {FLASHCALL: "Flash Call", VOICE: "Voice Password", SMS: "SMS"}
# Seconds connected in an answered call: a voice call reads the code out, a flash call is dropped.
_ANSWERED_SECONDS = {FLASHCALL: 1, VOICE: 4}

_CAPACITIES = {"4": 4, "5": 5, "6": 6}
_CLIENT_CAPACITY = 4
_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"7[0-9]{10}")
_CODE = re.compile(r"[0-9]{4}")
_DAY = re.compile(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}")
_MSK = timezone(timedelta(hours=3), "MSK")


class _RefusedError(Exception):
    """Ends a request with the provider's error answer; `code` is verbatim from its document."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Order:
    """A send request that passed validation."""

    channel: str
    number: str
    code: str | None
    """The client's code, if it sent one."""
    capacity: int
    ani: str | None
    callback_url: str | None
    original: Delivery | None
    """For an SMS follow-up: the call whose code it repeats."""


def _error(code: str) -> dict[str, str]:
    return {"result": "error", "error_code": code}


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _section(payload: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _RefusedError("unknown_request")
    return value


def _option(section: dict[str, Any], key: str) -> str | None:
    """A string-typed option; a number where the document writes a string is a malformed request."""
    value = section.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _RefusedError("unknown_request")


def _check_auth(request: web.Request, payload: dict[str, Any] | None) -> dict[str, Any]:
    if payload is None:
        raise _RefusedError("unknown_request")
    security = payload.get("security")
    body_key = security.get("apiKey") if isinstance(security, dict) else None
    if API_KEY not in (request.headers.get("Authorization"), body_key):
        raise _RefusedError("authorisation_failed")
    return payload


def _callback_url(payload: dict[str, Any]) -> str | None:
    url = _option(payload, "callback_url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise _RefusedError("unknown_request")
    return url


def _sms_order(payload: dict[str, Any], sms: dict[str, Any], state: SandboxState) -> _Order:
    if any(key in payload for key in ("number", "capacity", VOICE, FLASHCALL)):
        raise _RefusedError("unknown_request")
    call_id = _option(sms, "id")
    original = state.deliveries.get(call_id) if call_id is not None else None
    if original is None or original.provider != NAME or original.channel == SMS:
        raise _RefusedError("unknown_request")
    return _Order(
        channel=SMS,
        number=original.number,
        code=None,
        capacity=len(original.code),
        ani=None,
        # Without a callback_url of its own, the SMS reports where its call did.
        callback_url=_callback_url(payload) or original.callback_url,
        original=original,
    )


def _call_order(payload: dict[str, Any]) -> _Order:
    voice = _section(payload, VOICE)
    flash = _section(payload, FLASHCALL)
    if voice is not None and flash is not None:
        raise _RefusedError("unknown_request")
    number = _option(payload, "number")
    if not number or not _DIGITS.fullmatch(number):
        raise _RefusedError("number_is_empty")
    if not _NUMBER.fullmatch(number):
        raise _RefusedError("number_not_valid")
    raw_capacity = _option(payload, "capacity")
    capacity = _CAPACITIES.get(raw_capacity) if raw_capacity is not None else _CLIENT_CAPACITY
    # Only a service-generated flash code may be longer than 4 digits.
    if capacity is None or (capacity != _CLIENT_CAPACITY and (voice is not None or flash is not None)):
        raise _RefusedError("code_not_valid")
    code: str | None = None
    ani: str | None = None
    if flash is not None:
        code = _option(flash, "code")
        if code is None or not _CODE.fullmatch(code):
            raise _RefusedError("code_not_valid")
    if voice is not None:
        code = _option(voice, "code")
        if code is not None and not _CODE.fullmatch(code):
            raise _RefusedError("code_not_valid")
        if _option(voice, "repeat") not in (None, "0", "1"):
            raise _RefusedError("unknown_request")
        # The document's table calls the field `api`, its examples `ani`.
        ani = _option(voice, "ani") or _option(voice, "api")
        if ani is not None and ani not in REGISTERED_ANI:
            raise _RefusedError("ani_phone_not_valid")
    return _Order(
        channel=VOICE if voice is not None else FLASHCALL,
        number=number,
        code=code,
        capacity=capacity,
        ani=ani,
        callback_url=_callback_url(payload),
        original=None,
    )


def _parse_send(request: web.Request, payload: dict[str, Any] | None, state: SandboxState) -> _Order:
    payload = _check_auth(request, payload)
    sms = _section(payload, SMS)
    return _sms_order(payload, sms, state) if sms is not None else _call_order(payload)


def _moscow(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, _MSK)


def _seconds(delivery: Delivery) -> int:
    return _ANSWERED_SECONDS[delivery.channel] if delivery.state == "ANSWERED" else 0


def _callback_body(delivery: Delivery) -> dict[str, str]:
    return {
        "id": delivery.id,
        "number": delivery.number,
        "duration": str(_seconds(delivery)),
        "state": delivery.state,
        "price": str(delivery.price),
        "date": _moscow(delivery.placed_at).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _statistics_row(delivery: Delivery, now: float) -> dict[str, str]:
    settled = now >= delivery.settles_at
    seconds = _seconds(delivery) if settled else 0
    return {
        "id": delivery.id,
        "number": delivery.number,
        "date": _moscow(delivery.placed_at).strftime("%d.%m.%Y %H:%M:%S"),
        "duration": f"{seconds // 60:02d}:{seconds % 60:02d}",
        "price": str(delivery.price),
        "service": _SERVICES[delivery.channel],
        "state": _RUSSIAN_STATES[delivery.state] if settled else _IN_PROGRESS[delivery.channel],
    }


def _place(sandbox: Sandbox, order: _Order, behaviour: Behaviour, record: Record) -> dict[str, str]:
    state = sandbox.state
    price = PRICES[order.channel]
    if not state.charge(NAME, price):
        raise _RefusedError("not_enough_money")
    if order.original is not None:
        code, caller = order.original.code, SMS_SENDER
    elif order.channel == FLASHCALL:
        code = order.code or random_digits(state.rng, order.capacity)
        caller = caller_ending_in(state.rng, code)
    else:
        caller = order.ani or caller_ending_in(state.rng, "")
        code = order.code or caller[-_CLIENT_CAPACITY:]
    final = behaviour.state if behaviour.state in _STATES[order.channel] else _DEFAULT_STATES[order.channel]
    callback_delay_ms = (
        behaviour.callback_delay_ms if behaviour.callback_delay_ms is not None else DEFAULT_CALLBACK_DELAY_MS
    )
    now = state.now()
    delivery = Delivery(
        id=state.new_id(),
        provider=NAME,
        channel=order.channel,
        number=order.number,
        code=code,
        caller=caller,
        price=price,
        state=final,
        placed_at=now,
        settles_at=now + callback_delay_ms / 1000,
        callback_url=order.callback_url,
    )
    state.add_delivery(delivery)
    record.id, record.price, record.state = delivery.id, str(price), final
    text = f"Ваш код: {code}"
    if behaviour.deliver and final in _REACHES_PHONE[order.channel]:
        state.deliver(
            order.number,
            Message(
                provider=NAME,
                channel=order.channel,
                sender=caller,
                code=code,
                text=text if order.channel == SMS else None,
                at=now,
            ),
        )
    if order.callback_url is not None:
        body = _callback_body(delivery)
        sandbox.callbacks.schedule(order.callback_url, body, callback_delay_ms / 1000, record)
    answer = {"result": "ok", "id": delivery.id, "number": order.number, "price": str(price)}
    if order.channel == SMS:
        answer["message"] = text
    else:
        answer["code"] = code
    return answer


def _peek(payload: dict[str, Any] | None, state: SandboxState) -> tuple[str | None, str | None]:
    """The kind and number of a send request, as far as they can be told before validating it."""
    if payload is None:
        return None, None
    sms = payload.get(SMS)
    if isinstance(sms, dict):
        call_id = sms.get("id")
        original = state.deliveries.get(call_id) if isinstance(call_id, str) else None
        return SMS, original.number if original is not None else None
    number = payload.get("number")
    kind = VOICE if VOICE in payload else FLASHCALL
    return kind, number if isinstance(number, str) and number else None


def _as_received(raw: bytes, payload: dict[str, Any] | None) -> object:
    return payload if payload is not None else raw.decode("utf-8", errors="replace")


def _credential_headers(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in request.headers.items() if name.lower() == "authorization"}


async def send(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    state = sandbox.state
    raw = await request.read()
    payload = _decode(raw)
    kind, number = _peek(payload, state)
    record = state.add_record(
        NAME,
        request.path,
        kind,
        number,
        body=_as_received(raw, payload),
        headers=_credential_headers(request),
    )
    behaviour = state.next_behaviour(NAME, number)
    await delay(behaviour.latency_ms if behaviour.latency_ms is not None else state.latency_ms)
    fault = await faulty_answer(request, behaviour, record, sandbox.closing)
    if fault is not None:
        return fault
    try:
        if behaviour.error_code is not None:
            raise _RefusedError(behaviour.error_code)
        answer = _place(sandbox, _parse_send(request, payload, state), behaviour, record)
    except _RefusedError as refusal:
        record.error_code = refusal.code
        answer = _error(refusal.code)
    record.http_status = HTTPStatus.OK.value
    return web.json_response(answer)


def _call_of(payload: dict[str, Any], state: SandboxState) -> dict[str, Any]:
    call_id = _option(payload, "id")
    delivery = state.deliveries.get(call_id) if call_id is not None else None
    if delivery is None or delivery.provider != NAME:
        raise _RefusedError("ID_Not_Found")
    return {"result": "ok", "data": _statistics_row(delivery, state.now())}


def _daily(payload: dict[str, Any], state: SandboxState) -> dict[str, Any]:
    day = _option(payload, "date")
    if not day:
        raise _RefusedError("Date_is_Empty")
    if not _DAY.fullmatch(day):
        raise _RefusedError("unknown_request")
    now = state.now()
    rows = [
        _statistics_row(delivery, now)
        for delivery in state.deliveries_of(NAME)
        if delivery.channel != SMS and _moscow(delivery.placed_at).strftime("%d.%m.%Y") == day
    ]
    return {"result": "ok", "rows": str(len(rows)), "data": rows}


def _statistics(request: web.Request, payload: dict[str, Any] | None, state: SandboxState) -> dict[str, Any]:
    payload = _check_auth(request, payload)
    match payload.get("request"):
        case "balance":
            account = state.accounts[NAME]
            return {"result": "ok", "balance": f"{account.balance:.2f}", "currency": account.currency}
        case "state":
            return _call_of(payload, state)
        case "daily":
            return _daily(payload, state)
        case _:
            raise _RefusedError("unknown_request")


async def get(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    state = sandbox.state
    raw = await request.read()
    payload = _decode(raw)
    record = state.add_record(
        NAME, request.path, "get", None, body=_as_received(raw, payload), headers=_credential_headers(request)
    )
    await delay(state.latency_ms)
    try:
        answer = _statistics(request, payload, state)
    except _RefusedError as refusal:
        record.error_code = refusal.code
        answer = _error(refusal.code)
    record.http_status = HTTPStatus.OK.value
    return web.json_response(answer)


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/voice-password/send/", send)
    app.router.add_post("/api/voice-password/get/", get)
    return app


PROVIDER = ProviderSpec(
    name=NAME,
    default_balance=DEFAULT_BALANCE,
    error_codes=SEND_ERRORS,
    states=CALL_STATES | SMS_STATES,
    build_app=build_app,
    credentials={"api_key": API_KEY},
)
