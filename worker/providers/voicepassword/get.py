"""VoicePassword's `/get/` handler: the balance, the state of one call, a day's statistics.

Document: ../shared/providers/voicepassword.txt, "Запрос статистики". Requests name what
they ask for in `request` (`balance`, `state` with `id`, `daily` with `date` as dd.mm.yyyy);
answers write every value as a string, `rows` included, and name call states in Russian
(unlike the callbacks' `ANSWERED`, `BUSY`, ...). Anything of another shape raises
ErrorAnswer("unexpected_answer").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.core.verification import CallState
from worker.providers.base import CallStatus, parse_price
from worker.providers.voicepassword.api import ErrorAnswer

__all__ = [
    "BALANCE_REQUEST",
    "GET_PATH",
    "STATES",
    "DailyCall",
    "DailyStatistics",
    "daily_request",
    "read_balance",
    "read_daily",
    "read_state",
    "state_request",
]

GET_PATH = "/api/voice-password/get/"
BALANCE_REQUEST: Mapping[str, str] = {"request": "balance"}

#: Every state name the document gives, call and SMS, and where it leaves the call.
STATES: Mapping[str, CallState] = {
    "Успешно": CallState.DELIVERED,
    "Занято": CallState.BUSY,
    "Нет ответа": CallState.NO_ANSWER,
    "Ошибка": CallState.PROVIDER_ERROR,
    # "аналогичен статусу «Ошибка»"
    "Недозвон": CallState.PROVIDER_ERROR,
    "Отменен": CallState.CANCELED,
    # "промежуточный статус": the call is placed, the operator has not answered yet.
    "Дозвон": CallState.IN_PROGRESS,
    "Доставлено": CallState.DELIVERED,
    # The network could not hand the SMS to the phone (switched off, out of reach): like a
    # call nobody took, not a fault of the provider's.
    "Не доставлено": CallState.NO_ANSWER,
    "Отправлено": CallState.IN_PROGRESS,
    "Передано шлюзу": CallState.IN_PROGRESS,
}

_CURRENCY = "rub"
"""The document's "Rub"; the router counts in roubles and nothing else."""
_DATE = "%d.%m.%Y"
_DATE_TIME = "%d.%m.%Y %H:%M:%S"
_DURATION = re.compile(r"(?:([0-9]+):)?([0-9]+):([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class DailyCall:
    """One row of a day's statistics."""

    status: CallStatus
    number: str
    placed_at: datetime
    """As the provider writes it: its local time, with no zone in the answer."""
    duration: timedelta
    service: str
    """The provider's name for the service ("Voice Password", ...)."""


@dataclass(frozen=True, slots=True)
class DailyStatistics:
    day: date
    calls: tuple[DailyCall, ...]


def state_request(ref: str) -> dict[str, str]:
    return {"request": "state", "id": ref}


def daily_request(day: date) -> dict[str, str]:
    return {"request": "daily", "date": day.strftime(_DATE)}


def _unexpected(detail: str) -> ErrorAnswer:
    return ErrorAnswer("unexpected_answer", detail)


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise _unexpected(f"{key} is not a string")
    return value


def read_balance(answer: Mapping[str, Any]) -> Decimal:
    """`{"result": "ok", "balance": "999.00", "currency": "Rub"}` -> 999.00 roubles."""
    if _text(answer, "currency").casefold() != _CURRENCY:
        raise _unexpected("balance in another currency than roubles")
    try:
        balance = Decimal(_text(answer, "balance"))
    except InvalidOperation:
        raise _unexpected("balance is not a decimal") from None
    # A negative balance is possible (credit), an infinite or NaN one is not.
    if not balance.is_finite():
        raise _unexpected("balance is not a decimal")
    return balance


def _status(row: Any) -> CallStatus:
    if not isinstance(row, dict):
        raise _unexpected("call data is not a JSON object")
    provider_state = _text(row, "state")
    state = STATES.get(provider_state)
    if state is None:
        raise _unexpected("undocumented call state")
    return CallStatus(
        ref=_text(row, "id"), state=state, provider_state=provider_state, price=parse_price(row.get("price"))
    )


def read_state(answer: Mapping[str, Any], ref: str) -> CallStatus:
    """`{"result": "ok", "data": {"id": ..., "state": "Успешно", ...}}` -> the call's status."""
    status = _status(answer.get("data"))
    if status.ref != ref:
        raise _unexpected("state of another call")
    return status


def _duration(text: str) -> timedelta:
    """ "00:04" (minutes:seconds), or hours:minutes:seconds for a long call."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise _unexpected("duration is not minutes:seconds")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _daily_call(row: Any) -> DailyCall:
    status = _status(row)
    try:
        placed_at = datetime.strptime(_text(row, "date"), _DATE_TIME)
    except ValueError:
        raise _unexpected("date is not dd.mm.yyyy hh:mm:ss") from None
    return DailyCall(
        status=status,
        number=_text(row, "number"),
        placed_at=placed_at,
        duration=_duration(_text(row, "duration")),
        service=_text(row, "service"),
    )


def read_daily(answer: Mapping[str, Any], day: date) -> DailyStatistics:
    """`{"result": "ok", "rows": "2", "data": [...]}` -> the day's calls."""
    rows = _text(answer, "rows")
    data = answer.get("data")
    if not isinstance(data, list):
        raise _unexpected("data is not a list")
    if not rows.isdigit() or int(rows) != len(data):
        raise _unexpected("rows does not count the calls in data")
    return DailyStatistics(day=day, calls=tuple(_daily_call(row) for row in data))
