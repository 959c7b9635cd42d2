"""VoicePassword (vp.voicepassword.ru): flash call, voice call speaking a code, SMS follow-up,
and the `/get/` handler for the balance, a call's state and a day's statistics.

Document: ../shared/providers/voicepassword.txt. The send handler is the Voice-Password API
both VoicePassword and MobilGroup serve (worker/providers/voicepassword/api.py); this
document adds a flash code the client picks (`flashcall.code`), `callback_url`, the
`Charset` header, two send errors (`number_in_spam_list`, `code_not_valid`) and `/get/`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from worker.core.verification import CallState, Outcome
from worker.providers.base import (
    CallStatus,
    Classification,
    DocumentedError,
    TransportFailure,
    classifications,
    parse_price,
)
from worker.providers.voicepassword.api import (
    ACCOUNT,
    UNKNOWN_ERROR,
    ErrorAnswer,
    VoicePasswordApi,
    ok_answer,
    send_errors,
)
from worker.providers.voicepassword.get import (
    BALANCE_REQUEST,
    GET_PATH,
    DailyStatistics,
    daily_request,
    read_balance,
    read_daily,
    read_state,
    state_request,
)

__all__ = ["ERRORS", "GET_ERRORS", "SEND_ERRORS", "VoicePassword"]

_T = TypeVar("_T")

_QUERY = Classification(Outcome.PROVIDER_ERROR, breaker_failure=False)
"""A /get/ request that names no call or day the provider knows: neither side is broken."""

#: Every error code of the document, verbatim, in its order.
ERRORS: tuple[DocumentedError, ...] = (
    *send_errors(
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
    ),
    DocumentedError("unknown_request", "Ошибочный запрос", "get", ACCOUNT),
    DocumentedError("authorisation_failed", "Ошибка авторизации", "get", ACCOUNT),
    DocumentedError("user_disabled", "Ваш аккаунт заблокирован", "get", ACCOUNT),
    DocumentedError("ID_Not_Found", "Неверный идентификатор запроса", "get", _QUERY),
    DocumentedError("Date_is_Empty", "В запросе не указана дата", "get", _QUERY),
)

#: The send handler's errors, by code.
SEND_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "send")
#: The /get/ handler's errors, by code.
GET_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "get")


#: Callback states, as the document lists them for calls and for SMS.
CALLBACK_STATES: Mapping[str, CallState] = {
    "ANSWERED": CallState.DELIVERED,
    "BUSY": CallState.BUSY,
    "NO ANSWER": CallState.NO_ANSWER,
    "FAIL": CallState.PROVIDER_ERROR,
    "CANCEL": CallState.CANCELED,
    "QUEUED": CallState.IN_PROGRESS,
    "SEND": CallState.IN_PROGRESS,
    "DELIVERED": CallState.DELIVERED,
    # As in /get/: the network could not reach the phone, not a fault of the provider's.
    "NOT DELIVERED": CallState.NO_ANSWER,
}


class VoicePassword(VoicePasswordApi):
    type: ClassVar[str] = "voicepassword"
    errors: ClassVar[tuple[DocumentedError, ...]] = ERRORS
    client_flash_code: ClassVar[bool] = True
    takes_callback_url: ClassVar[bool] = True
    polls_status: ClassVar[bool] = True
    # The document's header table has "Charset: utf-8" beside Content-Type and Authorization.
    protocol_headers: ClassVar[Mapping[str, str]] = {"Charset": "utf-8"}

    @classmethod
    def parse_callback(cls, body: Any) -> CallStatus:
        """{"id","number","duration","state","price","date"}, every value a string."""
        if not isinstance(body, dict):
            raise ValueError("a callback is a JSON object")
        ref, state = body.get("id"), body.get("state")
        if not isinstance(ref, str | int) or isinstance(ref, bool) or str(ref) == "":
            raise ValueError("'id' is missing")
        if not isinstance(state, str) or state not in CALLBACK_STATES:
            raise ValueError(f"'state' must be one of {', '.join(CALLBACK_STATES)}")
        return CallStatus(
            ref=str(ref),
            state=CALLBACK_STATES[state],
            provider_state=state,
            price=parse_price(body.get("price")),
        )

    async def _query(self, body: Mapping[str, str], read: Callable[[dict[str, Any]], _T]) -> _T:
        """Ask /get/ and read its ok answer with `read`.

        Raises TransportFailure when there is no usable answer: a transport fault; an error
        answer (its `error_code` verbatim, its outcome from the document's table); or an answer
        of another shape (`unexpected_answer`).
        """
        status, answer = await self.post(GET_PATH, body)
        try:
            return read(ok_answer(status, answer))
        except ErrorAnswer as error:
            outcome = GET_ERRORS.get(error.error_code, UNKNOWN_ERROR).outcome
            raise TransportFailure(error.error_code, outcome, uncertain=False) from None

    async def balance(self) -> Decimal:
        """The account's balance in roubles (negative on credit). Raises TransportFailure
        when the provider tells none now (see `_query`)."""
        return await self._query(BALANCE_REQUEST, read_balance)

    async def call_status(self, ref: str) -> CallStatus:
        """Where the call or SMS `ref` stands, from the Russian state name /get/ answers.
        Raises TransportFailure as `_query` does: `ID_Not_Found` for an id the provider does not know."""
        return await self._query(state_request(ref), functools.partial(read_state, ref=ref))

    async def daily(self, day: date) -> DailyStatistics:
        """Every call placed on `day` (the provider's calendar) and its state. Raises
        TransportFailure as `_query` does."""
        return await self._query(daily_request(day), functools.partial(read_daily, day=day))
