"""VoicePassword imitation, to the letter of the provider's document (shared/providers/voicepassword.txt).

Served on its own port: a client whose base URL is `http://host:port` in place of
`https://vp.voicepassword.ru` posts to `/api/voice-password/send/` (flash call, voice code,
SMS follow-up) and `/api/voice-password/get/` (balance, call state, daily statistics). Both answer
HTTP 200 with `{"result": "ok", ...}` or `{"result": "error", "error_code": "..."}`, as the real one.
The send handler is the one MobilGroup shares (flashcall_dev/sandbox/voicepassword_api.py, with the
decisions common to both); this module holds VoicePassword's dialect of it and `/get/`.

Sandbox fixtures:

- API key `sandbox-voicepassword-key`, in the `Authorization` header or in `security.apiKey`.
- Caller numbers registered for `voice.ani` (`voice.api` in the document's table): 74950000000, 74951111111.
- A flash code the client picks (`flashcall.code`), `callback_url` (an SMS follow-up without one
  reports to its call's), the SMS answer's `message` ("Ваш код: XXXX"), the errors
  `number_in_spam_list` and `code_not_valid` (a code or capacity that is not allowed).
- Until a call settles, `/get/` reports it as "Дозвон" (an SMS as "Передано шлюзу"). `state`
  answers for SMS ids too ("Доставлено", ...); `daily` lists calls only, as documented.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from aiohttp import web

from flashcall_dev.sandbox.faults import delay
from flashcall_dev.sandbox.shared import SANDBOX
from flashcall_dev.sandbox.state import Delivery, SandboxState
from flashcall_dev.sandbox.voicepassword_api import (
    FLASHCALL,
    SMS,
    VOICE,
    Dialect,
    RefusedError,
    as_received,
    check_auth,
    credential_headers,
    decode,
    error_answer,
    moscow,
    option,
    provider_spec,
    seconds_connected,
    send_app,
)

__all__ = ["API_KEY", "GET_PATH", "PROVIDER", "REGISTERED_ANI"]

NAME = "voicepassword"
API_KEY = "sandbox-voicepassword-key"
REGISTERED_ANI = frozenset({"74950000000", "74951111111"})
GET_PATH = "/api/voice-password/get/"

VOICEPASSWORD = Dialect(
    name=NAME,
    api_key=API_KEY,
    security_keys=frozenset({"apiKey"}),
    registered_ani=REGISTERED_ANI,
    # The document's table calls the field `api`, its examples `ani`.
    ani_fields=("ani", "api"),
    send_errors=frozenset(
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
    ),
    code_error="code_not_valid",
    client_flash_code=True,
    callback_url=True,
    settings_section=False,
    sms_message=True,
    sms_sender="VoicePassword",
)

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
_GET_KEYS = frozenset({"security", "request", "id", "date"})
_DAY = re.compile(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}")


def _statistics_row(delivery: Delivery, now: float) -> dict[str, str]:
    settled = now >= delivery.settles_at
    seconds = seconds_connected(delivery) if settled else 0
    return {
        "id": delivery.id,
        "number": delivery.number,
        "date": moscow(delivery.placed_at).strftime("%d.%m.%Y %H:%M:%S"),
        "duration": f"{seconds // 60:02d}:{seconds % 60:02d}",
        "price": str(delivery.price),
        "service": _SERVICES[delivery.channel],
        "state": _RUSSIAN_STATES[delivery.state] if settled else _IN_PROGRESS[delivery.channel],
    }


def _call_of(payload: dict[str, Any], state: SandboxState) -> dict[str, Any]:
    call_id = option(payload, "id")
    delivery = state.deliveries.get(call_id) if call_id is not None else None
    if delivery is None or delivery.provider != NAME:
        raise RefusedError("ID_Not_Found")
    return {"result": "ok", "data": _statistics_row(delivery, state.now())}


def _daily(payload: dict[str, Any], state: SandboxState) -> dict[str, Any]:
    day = option(payload, "date")
    if not day:
        raise RefusedError("Date_is_Empty")
    if not _DAY.fullmatch(day):
        raise RefusedError("unknown_request")
    now = state.now()
    rows = [
        _statistics_row(delivery, now)
        for delivery in state.deliveries_of(NAME)
        if delivery.channel != SMS and moscow(delivery.placed_at).strftime("%d.%m.%Y") == day
    ]
    return {"result": "ok", "rows": str(len(rows)), "data": rows}


def _balance(state: SandboxState) -> dict[str, Any]:
    account = state.accounts[NAME]
    return {"result": "ok", "balance": f"{account.balance:.2f}", "currency": account.currency}


def _statistics(request: web.Request, payload: dict[str, Any] | None, state: SandboxState) -> dict[str, Any]:
    payload = check_auth(request, payload, VOICEPASSWORD)
    if not set(payload) <= _GET_KEYS:
        raise RefusedError("unknown_request")
    match payload.get("request"):
        case "balance":
            return _balance(state)
        case "state":
            return _call_of(payload, state)
        case "daily":
            return _daily(payload, state)
        case _:
            raise RefusedError("unknown_request")


async def get(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    state = sandbox.state
    raw = await request.read()
    payload = decode(raw)
    record = state.add_record(
        NAME, request.path, "get", None, body=as_received(raw, payload), headers=credential_headers(request)
    )
    await delay(state.latency_ms)
    try:
        answer = _statistics(request, payload, state)
    except RefusedError as refusal:
        record.error_code = refusal.code
        answer = error_answer(refusal.code)
    record.http_status = HTTPStatus.OK.value
    return web.json_response(answer)


def build_app() -> web.Application:
    app = send_app(VOICEPASSWORD)
    app.router.add_post(GET_PATH, get)
    return app


PROVIDER = provider_spec(VOICEPASSWORD, build_app)
