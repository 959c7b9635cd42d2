"""The send handler of the Voice-Password API, imitated once for VoicePassword and MobilGroup.

Both documents (shared/providers/voicepassword.txt, mobilgroup-voice-password.txt) describe the
same `POST /api/voice-password/send/`: a flash call (`capacity`), a voice call speaking a code
(`voice`), an SMS re-sending an earlier call's code (`sms.id`); the API key in the
`Authorization` header or the body's `security` section; every answer HTTP 200 with
`{"result": "ok", ...}` or `{"result": "error", "error_code": "..."}`. A `Dialect` says where
one provider's document departs from that; everything else is here, once.

Shared decisions where the documents are silent:

- Validation is as strict as a document allows: a key it does not name (at the top level or in a
  section) is `unknown_request`; numeric options must be JSON strings (`"capacity": "4"`), a JSON
  number is `unknown_request`, stricter than the real services, so that adapter bugs surface here.
- A number other than `7` and 10 digits is `number_not_valid`; a missing or non-digit one
  `number_is_empty`. A capacity other than 4..6, or above 4 for anything but a service flash
  code, and a code other than 4 digits, are the dialect's code error.
- An SMS follow-up (`{"sms": {"id": ...}}`) names no number or call option of its own (any of
  them is `unknown_request`), nor an id of another provider's call or of an SMS.
- Balance 1000.00 Rub; prices: flash call 0.35, voice 0.35, SMS 3.30. Dates are Moscow time.
- Unless scripted, a flash call ends NO ANSWER (the user sees a missed call and does not pick up),
  a voice call ANSWERED, an SMS DELIVERED, each 300 ms after it was placed. A scripted state from
  the other vocabulary (an SMS state for a call) leaves the default in place. Only final states
  in which the phone shows the code put a message in the inbox.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

from flashcall_dev.sandbox.codes import caller_ending_in, random_digits
from flashcall_dev.sandbox.faults import delay, faulty_answer
from flashcall_dev.sandbox.shared import SANDBOX, ProviderSpec, Sandbox
from flashcall_dev.sandbox.state import Behaviour, Delivery, Message, Record, SandboxState

__all__ = [
    "CALL_STATES",
    "DIALECT",
    "FLASHCALL",
    "SEND_PATH",
    "SMS",
    "SMS_STATES",
    "VOICE",
    "Dialect",
    "RefusedError",
    "as_received",
    "check_auth",
    "credential_headers",
    "decode",
    "error_answer",
    "moscow",
    "option",
    "provider_spec",
    "seconds_connected",
    "send_app",
]

SEND_PATH = "/api/voice-password/send/"
DEFAULT_BALANCE = Decimal("1000.00")
DEFAULT_CALLBACK_DELAY_MS = 300

FLASHCALL = "flashcall"
VOICE = "voice"
SMS = "sms"
SECURITY = "security"
SETTINGS = "settings"
CALLBACK_URL = "callback_url"

PRICES = {FLASHCALL: Decimal("0.35"), VOICE: Decimal("0.35"), SMS: Decimal("3.30")}
CALL_STATES = frozenset({"ANSWERED", "BUSY", "NO ANSWER", "FAIL", "CANCEL"})
SMS_STATES = frozenset({"QUEUED", "SEND", "DELIVERED", "NOT DELIVERED", "FAIL"})

_STATES = {FLASHCALL: CALL_STATES, VOICE: CALL_STATES, SMS: SMS_STATES}
_DEFAULT_STATES = {FLASHCALL: "NO ANSWER", VOICE: "ANSWERED", SMS: "DELIVERED"}
# Final states in which the user's phone shows the code: a missed flash call still shows its number.
_REACHES_PHONE = {
    FLASHCALL: frozenset({"ANSWERED", "NO ANSWER"}),
    VOICE: frozenset({"ANSWERED"}),
    SMS: frozenset({"DELIVERED"}),
}
# Seconds connected in an answered call: a voice call reads the code out, a flash call is dropped.
_ANSWERED_SECONDS = {FLASHCALL: 1, VOICE: 4}

_CAPACITIES = {"4": 4, "5": 5, "6": 6}
_CLIENT_CAPACITY = 4
_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"7[0-9]{10}")
_CODE = re.compile(r"[0-9]{4}")
_MSK = timezone(timedelta(hours=3), "MSK")


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where one provider's document departs from the Voice-Password API both describe."""

    name: str
    api_key: str
    security_keys: frozenset[str]
    """The names the document gives the key in the `security` section."""
    registered_ani: frozenset[str]
    """Caller numbers registered in the sandbox account, for the voice call's caller field."""
    ani_fields: tuple[str, ...]
    """The voice call's caller field, as the document's table and examples name it."""
    send_errors: frozenset[str]
    code_error: str
    """What a malformed code or capacity is answered: the document's code error, else its
    generic one."""
    client_flash_code: bool
    """The `flashcall` section: a flash code the client picks."""
    callback_url: bool
    """`callback_url`, where call and SMS statuses are posted once they settle."""
    settings_section: bool
    """`number` and `capacity` may come in a `settings` section (or at the top level, never both)."""
    sms_message: bool
    """An SMS answer carries `message` ("Ваш код: XXXX") in place of `code`."""
    sms_sender: str

    def top_level_keys(self) -> frozenset[str]:
        """The keys a send request's body may have: all the document names."""
        keys = {SECURITY, "number", "capacity", VOICE, SMS}
        keys |= {FLASHCALL} if self.client_flash_code else set()
        keys |= {CALLBACK_URL} if self.callback_url else set()
        keys |= {SETTINGS} if self.settings_section else set()
        return frozenset(keys)


DIALECT = web.AppKey("voice_password_dialect", Dialect)


class RefusedError(Exception):
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


def error_answer(code: str) -> dict[str, str]:
    return {"result": "error", "error_code": code}


def decode(raw: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def as_received(raw: bytes, payload: dict[str, Any] | None) -> object:
    return payload if payload is not None else raw.decode("utf-8", errors="replace")


def credential_headers(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in request.headers.items() if name.lower() == "authorization"}


def _section(payload: dict[str, Any], key: str, allowed: frozenset[str]) -> dict[str, Any] | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= allowed:
        raise RefusedError("unknown_request")
    return value


def option(section: dict[str, Any], key: str) -> str | None:
    """A string-typed option; a number where the document writes a string is a malformed request."""
    value = section.get(key)
    if value is None or isinstance(value, str):
        return value
    raise RefusedError("unknown_request")


def check_auth(request: web.Request, payload: dict[str, Any] | None, dialect: Dialect) -> dict[str, Any]:
    """The payload of a request that carries the account's key in either documented place."""
    if payload is None:
        raise RefusedError("unknown_request")
    security = _section(payload, SECURITY, dialect.security_keys) or {}
    body_keys = {security.get(key) for key in dialect.security_keys}
    if dialect.api_key not in body_keys | {request.headers.get("Authorization")}:
        raise RefusedError("authorisation_failed")
    return payload


def _callback_url(payload: dict[str, Any]) -> str | None:
    url = option(payload, CALLBACK_URL)
    if url is not None and not url.startswith(("http://", "https://")):
        raise RefusedError("unknown_request")
    return url


def _sms_order(payload: dict[str, Any], state: SandboxState, dialect: Dialect) -> _Order:
    if not set(payload) <= {SECURITY, SMS, CALLBACK_URL}:
        raise RefusedError("unknown_request")
    sms = _section(payload, SMS, frozenset({"id"})) or {}
    call_id = option(sms, "id")
    original = state.deliveries.get(call_id) if call_id is not None else None
    if original is None or original.provider != dialect.name or original.channel == SMS:
        raise RefusedError("unknown_request")
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


def _call_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """Where `number` and `capacity` are: the top level, or the `settings` section of a dialect
    whose table puts them there."""
    settings = _section(payload, SETTINGS, frozenset({"number", "capacity"}))
    if settings is None:
        return payload
    if "number" in payload or "capacity" in payload:
        raise RefusedError("unknown_request")
    return settings


def _voice_code(voice: dict[str, Any], dialect: Dialect) -> tuple[str | None, str | None]:
    """The voice section's code and caller number."""
    code = option(voice, "code")
    if code is not None and not _CODE.fullmatch(code):
        raise RefusedError(dialect.code_error)
    if option(voice, "repeat") not in (None, "0", "1"):
        raise RefusedError("unknown_request")
    ani = next((value for field in dialect.ani_fields if (value := option(voice, field))), None)
    if ani is not None and ani not in dialect.registered_ani:
        raise RefusedError("ani_phone_not_valid")
    return code, ani


def _call_order(payload: dict[str, Any], dialect: Dialect) -> _Order:
    voice = _section(payload, VOICE, frozenset({"code", "repeat", *dialect.ani_fields}))
    flash = _section(payload, FLASHCALL, frozenset({"code"}))
    if voice is not None and flash is not None:
        raise RefusedError("unknown_request")
    settings = _call_settings(payload)
    number = option(settings, "number")
    if not number or not _DIGITS.fullmatch(number):
        raise RefusedError("number_is_empty")
    if not _NUMBER.fullmatch(number):
        raise RefusedError("number_not_valid")
    raw_capacity = option(settings, "capacity")
    capacity = _CAPACITIES.get(raw_capacity) if raw_capacity is not None else _CLIENT_CAPACITY
    # Only a service-generated flash code may be longer than 4 digits.
    if capacity is None or (capacity != _CLIENT_CAPACITY and (voice is not None or flash is not None)):
        raise RefusedError(dialect.code_error)
    code: str | None = None
    ani: str | None = None
    if flash is not None:
        code = option(flash, "code")
        if code is None or not _CODE.fullmatch(code):
            raise RefusedError(dialect.code_error)
    if voice is not None:
        code, ani = _voice_code(voice, dialect)
    return _Order(
        channel=VOICE if voice is not None else FLASHCALL,
        number=number,
        code=code,
        capacity=capacity,
        ani=ani,
        callback_url=_callback_url(payload),
        original=None,
    )


def _parse_send(
    request: web.Request, payload: dict[str, Any] | None, state: SandboxState, dialect: Dialect
) -> _Order:
    payload = check_auth(request, payload, dialect)
    if not set(payload) <= dialect.top_level_keys():
        raise RefusedError("unknown_request")
    return _sms_order(payload, state, dialect) if SMS in payload else _call_order(payload, dialect)


def moscow(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, _MSK)


def seconds_connected(delivery: Delivery) -> int:
    return _ANSWERED_SECONDS[delivery.channel] if delivery.state == "ANSWERED" else 0


def _callback_body(delivery: Delivery) -> dict[str, str]:
    return {
        "id": delivery.id,
        "number": delivery.number,
        "duration": str(seconds_connected(delivery)),
        "state": delivery.state,
        "price": str(delivery.price),
        "date": moscow(delivery.placed_at).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _place(
    sandbox: Sandbox, order: _Order, behaviour: Behaviour, record: Record, dialect: Dialect
) -> dict[str, str]:
    state = sandbox.state
    price = PRICES[order.channel]
    if not state.charge(dialect.name, price):
        raise RefusedError("not_enough_money")
    if order.original is not None:
        code, caller = order.original.code, dialect.sms_sender
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
        provider=dialect.name,
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
                provider=dialect.name,
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
    if order.channel == SMS and dialect.sms_message:
        answer["message"] = text
    else:
        answer["code"] = code
    return answer


def _peek(
    payload: dict[str, Any] | None, state: SandboxState, dialect: Dialect
) -> tuple[str | None, str | None]:
    """The kind and number of a send request, as far as they can be told before validating it."""
    if payload is None:
        return None, None
    sms = payload.get(SMS)
    if isinstance(sms, dict):
        call_id = sms.get("id")
        original = state.deliveries.get(call_id) if isinstance(call_id, str) else None
        return SMS, original.number if original is not None else None
    settings = payload.get(SETTINGS) if dialect.settings_section else None
    number = (settings if isinstance(settings, dict) else payload).get("number")
    kind = VOICE if VOICE in payload else FLASHCALL
    return kind, number if isinstance(number, str) and number else None


async def send(request: web.Request) -> web.StreamResponse:
    sandbox = request.config_dict[SANDBOX]
    dialect = request.config_dict[DIALECT]
    state = sandbox.state
    raw = await request.read()
    payload = decode(raw)
    kind, number = _peek(payload, state, dialect)
    record = state.add_record(
        dialect.name,
        request.path,
        kind,
        number,
        body=as_received(raw, payload),
        headers=credential_headers(request),
    )
    behaviour = state.next_behaviour(dialect.name, number)
    await delay(behaviour.latency_ms if behaviour.latency_ms is not None else state.latency_ms)
    fault = await faulty_answer(request, behaviour, record, sandbox.closing)
    if fault is not None:
        return fault
    try:
        if behaviour.error_code is not None:
            raise RefusedError(behaviour.error_code)
        answer = _place(sandbox, _parse_send(request, payload, state, dialect), behaviour, record, dialect)
    except RefusedError as refusal:
        record.error_code = refusal.code
        answer = error_answer(refusal.code)
    record.http_status = HTTPStatus.OK.value
    return web.json_response(answer)


def send_app(dialect: Dialect) -> web.Application:
    """The provider's app with its send handler; a dialect with more handlers adds its routes."""
    app = web.Application()
    app[DIALECT] = dialect
    app.router.add_post(SEND_PATH, send)
    return app


def provider_spec(dialect: Dialect, build: Callable[[], web.Application]) -> ProviderSpec:
    return ProviderSpec(
        name=dialect.name,
        default_balance=DEFAULT_BALANCE,
        error_codes=dialect.send_errors,
        states=CALL_STATES | SMS_STATES,
        build_app=build,
        credentials={"api_key": dialect.api_key},
    )
