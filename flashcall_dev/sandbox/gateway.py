"""FlashingCall REST gateway imitation, to the letter of its document
(shared/providers/flashingcall-rest-gateway.txt).

The document names no URL: the imitation serves its one request at `POST /` on its own port,
so a client configured with the base URL `http://host:port` posts to it as is.

Sandbox fixtures:

- Two accounts, because which variant an account delivers is agreed with the gateway's
  support, not chosen per request (the request is the same FLASHINGCALL message):
  login `sandbox-gateway-login` delivers flash calls (the caller number ends in the code),
  login `sandbox-gateway-voicecode-login` delivers VoiceCode calls (the code is spoken).
  Both take the password `sandbox-gateway-password`.
- Success: HTTP 200 `{"messageId": "<id>"}` (the document gives no success body). The user's
  inbox gets the call at once; a script step with `"deliver": false` accepts the message but
  the call never reaches the phone. The document knows no balance or prices: nothing is
  charged, and there are no callbacks or call states (statuses go through a mechanism the
  document does not describe), so `state` and `callback_delay_ms` script nothing here.
- Errors: the documented HTTP status with `{"error": {"code": N, "description": "..."},
  "extendedDescription": "..."}`, as the document's example. Checked in this order:
  the body is a JSON object and `login`, `password` are strings (4 Invalid request), the
  login (5), the password (6); every other parameter present with its documented type and no
  parameter the document does not list ("Все параметры обязательные"; only `ttl` may be
  absent, as its note says) (4); `destAddr` in one of the document's forms 72101234567,
  +72101234567, 8-210-123-45-67, 82101234567 (8); `message/type` FLASHINGCALL (9); `ttl` 1..5,
  or 0 for the account default (11); the text at most 2000 characters holding the code (4):
  exactly one 4- or 6-digit group for a flash-call account, exactly 4 digits and nothing else
  for a VoiceCode account (its code goes "без сопутствующего текста" into the voice template);
  then duplicates (10). Codes 1, 2, 3, 7 and 100 describe the gateway's or the account's own
  state and only happen when scripted (`{"error_code": "1"}`).
- Duplicates: the same text from the same login to the same number within 60 s (the
  shortest ttl) of an accepted one is refused with 10 (409): a redelivered request never rings
  the user twice.
- Unknown parameters are refused, stricter than the document requires, so that adapter bugs
  surface here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

from flashcall_dev.sandbox.codes import caller_ending_in
from flashcall_dev.sandbox.faults import delay, faulty_answer
from flashcall_dev.sandbox.shared import SANDBOX, ProviderSpec
from flashcall_dev.sandbox.state import Message, Record, SandboxState

__all__ = ["LOGIN", "PASSWORD", "PATH", "PROVIDER", "VOICECODE_LOGIN"]

NAME = "gateway"
PATH = "/"
LOGIN = "sandbox-gateway-login"
VOICECODE_LOGIN = "sandbox-gateway-voicecode-login"
PASSWORD = "sandbox-gateway-password"
MESSAGE_TYPE = "FLASHINGCALL"
DUPLICATE_WINDOW_S = 60.0
MAX_TEXT_LENGTH = 2000
# The document has no balance; the sandbox's account model needs one and nothing reads it.
DEFAULT_BALANCE = Decimal("0.00")

FLASHCALL = "flashcall"
VOICE = "voice"
_ACCOUNTS = {LOGIN: FLASHCALL, VOICECODE_LOGIN: VOICE}

# The document's table "Коды ошибок отправки": code -> (description, HTTP status), verbatim.
_ERRORS: dict[int, tuple[str, int]] = {
    1: ("Service is unavailable", 503),
    2: ("Invalid IP-address", 403),
    3: ("Too many connections", 429),
    4: ("Invalid request", 400),
    5: ("Invalid login", 401),
    6: ("Invalid password", 401),
    7: ("serviceNumber is not defined", 400),
    8: ("destAddr is not correct", 406),
    9: ("Message type is not correct", 406),
    10: ("Prohibited sending duplicates", 409),
    11: ("Invalid TTL", 406),
    100: ("100", 500),
}
SEND_ERRORS = frozenset(str(code) for code in _ERRORS)
_INVALID_REQUEST = 4
_INVALID_LOGIN = 5
_INVALID_PASSWORD = 6
_BAD_DEST_ADDR = 8
_BAD_MESSAGE_TYPE = 9
_DUPLICATE = 10
_INVALID_TTL = 11

_TTL_MINUTES = range(1, 6)
_ACCOUNT_DEFAULT_TTL = 0
# The country code ('8', '7' or '+7') and ten digits, with dashes between digits allowed.
_DEST_ADDR = re.compile(r"(?:\+7|7|8)(?:-?[0-9]){10}")
_DIGIT_GROUPS = re.compile(r"[0-9]+")
_FLASHCALL_CODE_LENGTHS = frozenset({4, 6})
_VOICE_CODE = re.compile(r"[0-9]{4}")
_FIELDS = {
    "": frozenset({"login", "password", "destAddr", "message"}),
    "message": frozenset({"type", "data"}),
    "message/data": frozenset({"text", "ttl"}),
}
_KIND_NAMES: dict[type, str] = {str: "a string", dict: "an object"}
_CODE_MESSAGES = {
    FLASHCALL: "FlashingCall text should contain a 4- or 6-digit code.",
    # The document's own example message; a VoiceCode code has 4 digits only.
    VOICE: "FlashingCall text should contain a 4-digit code.",
}


class _RefusedError(Exception):
    """Ends a request with the gateway's error answer for a documented code."""

    def __init__(self, code: int, extended: str) -> None:
        super().__init__(code)
        self.code = code
        self.extended = extended


@dataclass(frozen=True, slots=True)
class _Order:
    """A request that passed validation."""

    login: str
    channel: str
    number: str
    text: str
    code: str


def _error_answer(code: int, extended: str) -> web.Response:
    description, status = _ERRORS[code]
    return web.json_response(
        {"error": {"code": code, "description": description}, "extendedDescription": extended}, status=status
    )


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _national(dest_addr: str) -> str | None:
    """7XXXXXXXXXX for any of the document's forms of a Russian number, else None."""
    if not _DEST_ADDR.fullmatch(dest_addr):
        return None
    return "7" + dest_addr.replace("-", "")[-10:]


def _member(section: dict[str, Any], where: str, key: str, kind: type) -> Any:
    value = section.get(key)
    # bool is an int to Python, never to the document.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _RefusedError(_INVALID_REQUEST, f"{where}{key} is missing or is not {_KIND_NAMES[kind]}.")
    return value


def _only_documented(section: dict[str, Any], where: str) -> None:
    unknown = sorted(set(section) - _FIELDS[where.rstrip("/")])
    if unknown:
        raise _RefusedError(_INVALID_REQUEST, f"Unknown parameter {where}{unknown[0]}.")


def _authenticate(payload: Any) -> tuple[str, str]:
    """The account's login and the channel it delivers."""
    if not isinstance(payload, dict):
        raise _RefusedError(_INVALID_REQUEST, "The request body should be a JSON object.")
    login = _member(payload, "", "login", str)
    password = _member(payload, "", "password", str)
    channel = _ACCOUNTS.get(login)
    if channel is None:
        raise _RefusedError(_INVALID_LOGIN, "No partner with this login.")
    if password != PASSWORD:
        raise _RefusedError(_INVALID_PASSWORD, "The password does not match the login.")
    return login, channel


def _code(text: str, channel: str) -> str:
    if channel == VOICE:
        found = [text] if _VOICE_CODE.fullmatch(text) else []
    else:
        found = [group for group in _DIGIT_GROUPS.findall(text) if len(group) in _FLASHCALL_CODE_LENGTHS]
    if len(found) != 1:
        raise _RefusedError(_INVALID_REQUEST, _CODE_MESSAGES[channel])
    return found[0]


def _parse(payload: Any) -> _Order:
    login, channel = _authenticate(payload)
    _only_documented(payload, "")
    dest_addr = _member(payload, "", "destAddr", str)
    message = _member(payload, "", "message", dict)
    _only_documented(message, "message/")
    message_type = _member(message, "message/", "type", str)
    data = _member(message, "message/", "data", dict)
    _only_documented(data, "message/data/")
    text = _member(data, "message/data/", "text", str)
    ttl = data.get("ttl", _ACCOUNT_DEFAULT_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise _RefusedError(_INVALID_REQUEST, "message/data/ttl is not an integer.")
    number = _national(dest_addr)
    if number is None:
        raise _RefusedError(_BAD_DEST_ADDR, "destAddr should be a Russian number: 7..., +7... or 8...")
    if message_type != MESSAGE_TYPE:
        raise _RefusedError(_BAD_MESSAGE_TYPE, f"message/type should be {MESSAGE_TYPE}.")
    if ttl != _ACCOUNT_DEFAULT_TTL and ttl not in _TTL_MINUTES:
        raise _RefusedError(_INVALID_TTL, "message/data/ttl should be from 1 to 5 minutes.")
    if len(text) > MAX_TEXT_LENGTH:
        raise _RefusedError(_INVALID_REQUEST, f"message/data/text should be at most {MAX_TEXT_LENGTH} chars.")
    return _Order(login=login, channel=channel, number=number, text=text, code=_code(text, channel))


def _sent_same(record: Record, order: _Order) -> bool:
    """Whether an accepted earlier request carried the same message from the same account."""
    body = record.body
    if record.id is None or not isinstance(body, dict):
        return False
    return bool(body.get("login") == order.login and body["message"]["data"]["text"] == order.text)


def _refuse_duplicate(state: SandboxState, order: _Order) -> None:
    since = state.now() - DUPLICATE_WINDOW_S
    for record in state.find_records(provider=NAME, number=order.number):
        if record.at >= since and _sent_same(record, order):
            raise _RefusedError(_DUPLICATE, "The same message was sent to this destAddr a moment ago.")


def _peek(payload: Any) -> tuple[str | None, str | None]:
    """The kind and number of a request, as far as they can be told before validating it."""
    if not isinstance(payload, dict):
        return None, None
    login, dest_addr = payload.get("login"), payload.get("destAddr")
    kind = _ACCOUNTS.get(login) if isinstance(login, str) else None
    return kind, _national(dest_addr) if isinstance(dest_addr, str) else None


def _as_received(raw: bytes, payload: Any) -> object:
    return payload if payload is not None else raw.decode("utf-8", errors="replace")


def _credential_headers(request: web.Request) -> dict[str, str]:
    # The gateway takes credentials in the body only; a header carrying them is recorded so
    # that a contract test can tell the adapter sends none.
    return {name: value for name, value in request.headers.items() if name.lower() == "authorization"}


async def send(request: web.Request) -> web.StreamResponse:
    sandbox = request.config_dict[SANDBOX]
    state = sandbox.state
    raw = await request.read()
    payload = _decode(raw)
    kind, number = _peek(payload)
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
            raise _RefusedError(int(behaviour.error_code), "Scripted by the sandbox.")
        order = _parse(payload)
        _refuse_duplicate(state, order)
    except _RefusedError as refusal:
        record.error_code = str(refusal.code)
        record.http_status = _ERRORS[refusal.code][1]
        return _error_answer(refusal.code, refusal.extended)
    record.id = state.new_id()
    record.http_status = HTTPStatus.OK.value
    if behaviour.deliver:
        caller = caller_ending_in(state.rng, order.code if order.channel == FLASHCALL else "")
        state.deliver(
            order.number,
            Message(
                provider=NAME, channel=order.channel, sender=caller, code=order.code, text=None, at=record.at
            ),
        )
    return web.json_response({"messageId": record.id})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post(PATH, send)
    return app


PROVIDER = ProviderSpec(
    name=NAME,
    default_balance=DEFAULT_BALANCE,
    error_codes=SEND_ERRORS,
    states=frozenset(),
    build_app=build_app,
    credentials={"login": LOGIN, "password": PASSWORD},
)
