"""VoicePassword's `/get/` handler through the adapter: the balance, a call's state, a day's
statistics; the request bodies as the document's examples write them, every Russian state,
every /get/ error code and the transport faults.

The provider is reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched. The document is
../shared/providers/voicepassword.txt, section "Запрос статистики".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.unit.stub_transport import Handler, answer, exchange, hanging, raising, raw_answer
from worker.core.verification import CallState, Outcome
from worker.providers.base import CallStatus, TransportFailure
from worker.providers.voicepassword.adapter import ERRORS, GET_ERRORS, VoicePassword
from worker.providers.voicepassword.get import DailyCall, DailyStatistics

BASE_URL = "https://vp.example.test"
API_KEY = "vp-test-key-5f2c"
GET_URL = BASE_URL + "/api/voice-password/get/"

#: The document's answers, verbatim.
BALANCE_OK = {"result": "ok", "balance": "999.00", "currency": "Rub"}
STATE_DATA: dict[str, str] = {
    "id": "12345",
    "number": "79999999999",
    "date": "11.09.2020 13:34:39",
    "duration": "00:04",
    "price": "0.35",
    "service": "Voice Password",
    "state": "Успешно",
}
STATE_OK = {"result": "ok", "data": STATE_DATA}
DAILY_OK = {
    "result": "ok",
    "rows": "2",
    "data": [
        STATE_DATA,
        {
            "id": "12346",
            "number": "79999998888",
            "date": "11.09.2020 13:50:13",
            "duration": "00:00",
            "price": "0.35",
            "service": "Voice Password",
            "state": "Занято",
        },
    ],
}
DAY = date(2020, 9, 11)

#: Section 4 of "Запрос статистики": (code, the document's words, outcome).
EXPECTED_GET_ERRORS: list[tuple[str, str, Outcome]] = [
    ("unknown_request", "Ошибочный запрос", Outcome.PROVIDER_ERROR),
    ("authorisation_failed", "Ошибка авторизации", Outcome.PROVIDER_ERROR),
    ("user_disabled", "Ваш аккаунт заблокирован", Outcome.PROVIDER_ERROR),
    ("ID_Not_Found", "Неверный идентификатор запроса", Outcome.PROVIDER_ERROR),
    ("Date_is_Empty", "В запросе не указана дата", Outcome.PROVIDER_ERROR),
]

Query = Callable[[VoicePassword], Awaitable[Any]]
QUERIES: dict[str, Query] = {
    "balance": lambda p: p.balance(),
    "state": lambda p: p.call_status("12345"),
    "daily": lambda p: p.daily(DAY),
}


def make_provider(options: dict[str, str] | None = None, *, timeout: float = 1.0) -> VoicePassword:
    return VoicePassword.from_config(
        "vp", base_url=BASE_URL, timeout=timeout, credentials={"api_key": API_KEY}, options=options or {}
    )


def ask(
    handler: Handler, query: Query, *, options: dict[str, str] | None = None, timeout: float = 1.0
) -> tuple[Any, list[httpx.Request]]:
    return exchange(make_provider(options, timeout=timeout), handler, query)


def failure(handler: Handler, query: Query, *, timeout: float = 1.0) -> TransportFailure:
    with pytest.raises(TransportFailure) as raised:
        ask(handler, query, timeout=timeout)
    return raised.value


def state_answer(**data: str) -> Handler:
    return answer({"result": "ok", "data": {**STATE_DATA, **data}})


# --- the requests -------------------------------------------------------------------------


def sent_body(query: Query, handler: Handler, options: dict[str, str] | None = None) -> Any:
    _, seen = ask(handler, query, options=options)
    assert len(seen) == 1
    return json.loads(seen[0].content)


def test_balance_request_names_only_the_request() -> None:
    assert sent_body(QUERIES["balance"], answer(BALANCE_OK)) == {"request": "balance"}


def test_state_request_names_the_call_by_its_id() -> None:
    assert sent_body(QUERIES["state"], answer(STATE_OK)) == {"request": "state", "id": "12345"}


def test_daily_request_writes_the_date_as_dd_mm_yyyy() -> None:
    body = sent_body(lambda p: p.daily(date(2021, 1, 2)), answer({"result": "ok", "rows": "0", "data": []}))

    assert body == {"request": "daily", "date": "02.01.2021"}


def test_get_request_with_the_key_in_the_security_section_is_the_documents_example() -> None:
    body = sent_body(QUERIES["balance"], answer(BALANCE_OK), {"api_key_in": "security"})

    assert body == {"security": {"apiKey": API_KEY}, "request": "balance"}
    assert list(body) == ["security", "request"]


def test_get_request_is_a_post_to_the_get_handler_with_the_documents_headers() -> None:
    _, [request] = ask(answer(BALANCE_OK), QUERIES["balance"])

    assert (request.method, str(request.url)) == ("POST", GET_URL)
    assert request.headers["authorization"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["charset"] == "utf-8"


# --- balance ------------------------------------------------------------------------------


def test_balance_is_the_answers_decimal_in_roubles() -> None:
    balance, _ = ask(answer(BALANCE_OK), QUERIES["balance"])

    assert balance == Decimal("999.00")


def test_a_negative_balance_is_kept() -> None:
    balance, _ = ask(answer({**BALANCE_OK, "balance": "-12.50"}), QUERIES["balance"])

    assert balance == Decimal("-12.50")


@pytest.mark.parametrize(
    "body",
    [
        {**BALANCE_OK, "currency": "USD"},
        {"result": "ok", "balance": "999.00"},
        {**BALANCE_OK, "balance": "lots"},
        {**BALANCE_OK, "balance": "NaN"},
        {**BALANCE_OK, "balance": 999},
    ],
    ids=["usd", "no-currency", "not-decimal", "nan", "json-number"],
)
def test_balance_of_another_shape_raises_an_unexpected_answer(body: dict[str, Any]) -> None:
    raised = failure(answer(body), QUERIES["balance"])

    assert (raised.error_code, raised.outcome, raised.uncertain) == (
        "unexpected_answer",
        Outcome.PROVIDER_ERROR,
        False,
    )


# --- call state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("russian", "state"),
    [
        ("Успешно", CallState.DELIVERED),
        ("Занято", CallState.BUSY),
        ("Нет ответа", CallState.NO_ANSWER),
        ("Ошибка", CallState.PROVIDER_ERROR),
        ("Недозвон", CallState.PROVIDER_ERROR),
        ("Отменен", CallState.CANCELED),
        ("Дозвон", CallState.IN_PROGRESS),
        ("Доставлено", CallState.DELIVERED),
        ("Не доставлено", CallState.NO_ANSWER),
        ("Отправлено", CallState.IN_PROGRESS),
        ("Передано шлюзу", CallState.IN_PROGRESS),
    ],
)
def test_every_documented_russian_state_maps_to_its_call_state(russian: str, state: CallState) -> None:
    status, _ = ask(state_answer(state=russian), QUERIES["state"])

    assert status == CallStatus(ref="12345", state=state, provider_state=russian, price=Decimal("0.35"))


def test_the_documents_state_answer_is_a_delivered_call() -> None:
    status, _ = ask(answer(STATE_OK), QUERIES["state"])

    assert status == CallStatus(
        ref="12345", state=CallState.DELIVERED, provider_state="Успешно", price=Decimal("0.35")
    )


@pytest.mark.parametrize(
    "handler",
    [
        state_answer(state="ANSWERED"),
        state_answer(state="Отменён"),
        state_answer(id="99999"),
        answer({"result": "ok"}),
        answer({"result": "ok", "data": [STATE_DATA]}),
    ],
    ids=["callback-vocabulary", "undocumented-spelling", "another-call", "no-data", "data-list"],
)
def test_state_answer_of_another_shape_raises_an_unexpected_answer(handler: Handler) -> None:
    assert failure(handler, QUERIES["state"]).error_code == "unexpected_answer"


# --- daily statistics ---------------------------------------------------------------------


def test_the_documents_daily_answer_becomes_typed_rows() -> None:
    statistics, _ = ask(answer(DAILY_OK), QUERIES["daily"])

    assert statistics == DailyStatistics(
        day=DAY,
        calls=(
            DailyCall(
                status=CallStatus("12345", CallState.DELIVERED, "Успешно", Decimal("0.35")),
                number="79999999999",
                placed_at=datetime(2020, 9, 11, 13, 34, 39),
                duration=timedelta(seconds=4),
                service="Voice Password",
            ),
            DailyCall(
                status=CallStatus("12346", CallState.BUSY, "Занято", Decimal("0.35")),
                number="79999998888",
                placed_at=datetime(2020, 9, 11, 13, 50, 13),
                duration=timedelta(0),
                service="Voice Password",
            ),
        ),
    )


def test_a_day_without_calls_has_no_rows() -> None:
    statistics, _ = ask(answer({"result": "ok", "rows": "0", "data": []}), QUERIES["daily"])

    assert statistics == DailyStatistics(day=DAY, calls=())


def test_a_long_call_duration_may_count_hours() -> None:
    row = {**STATE_DATA, "duration": "01:02:03"}

    statistics, _ = ask(answer({"result": "ok", "rows": "1", "data": [row]}), QUERIES["daily"])

    assert statistics.calls[0].duration == timedelta(hours=1, minutes=2, seconds=3)


@pytest.mark.parametrize(
    "body",
    [
        {**DAILY_OK, "rows": 2},
        {**DAILY_OK, "rows": "3"},
        {**DAILY_OK, "rows": "two"},
        {"result": "ok", "rows": "0"},
        {**DAILY_OK, "data": [STATE_DATA, {**STATE_DATA, "date": "2020-09-11 13:50:13"}]},
        {**DAILY_OK, "data": [STATE_DATA, {**STATE_DATA, "duration": "4"}]},
        {**DAILY_OK, "data": [STATE_DATA, {**STATE_DATA, "number": 79999998888}]},
    ],
    ids=["rows-number", "rows-miscounted", "rows-not-digits", "no-data", "date", "duration", "number"],
)
def test_daily_answer_of_another_shape_raises_an_unexpected_answer(body: dict[str, Any]) -> None:
    assert failure(answer(body), QUERIES["daily"]).error_code == "unexpected_answer"


# --- error codes --------------------------------------------------------------------------


def error(error_code: str) -> Handler:
    return answer({"result": "error", "error_code": error_code})


def test_get_errors_are_the_documents_codes_and_words_in_its_order() -> None:
    listed = [(e.code, e.meaning, e.classification.outcome) for e in ERRORS if e.request == "get"]

    assert listed == EXPECTED_GET_ERRORS


@pytest.mark.parametrize("query", sorted(QUERIES))
@pytest.mark.parametrize("error_code", sorted(GET_ERRORS))
def test_every_get_error_raises_it_verbatim_with_its_tables_outcome(query: str, error_code: str) -> None:
    raised = failure(error(error_code), QUERIES[query])

    assert (raised.error_code, raised.outcome, raised.uncertain) == (
        error_code,
        GET_ERRORS[error_code].outcome,
        False,
    )


@pytest.mark.parametrize(
    ("error_code", "outcome"), [(code, outcome) for code, _, outcome in EXPECTED_GET_ERRORS]
)
def test_documented_get_error_raises_the_expected_outcome(error_code: str, outcome: Outcome) -> None:
    assert failure(error(error_code), QUERIES["state"]).outcome is outcome


@pytest.mark.parametrize(
    ("error_code", "breaker_failure"),
    [
        ("unknown_request", True),
        ("authorisation_failed", True),
        ("user_disabled", True),
        ("ID_Not_Found", False),
        ("Date_is_Empty", False),
    ],
)
def test_only_account_errors_of_get_count_against_the_breaker(error_code: str, breaker_failure: bool) -> None:
    assert GET_ERRORS[error_code].breaker_failure is breaker_failure


def test_unknown_get_error_code_raises_a_provider_error_kept_verbatim() -> None:
    raised = failure(error("Something_New"), QUERIES["balance"])

    assert (raised.error_code, raised.outcome) == ("Something_New", Outcome.PROVIDER_ERROR)


# --- transport faults ---------------------------------------------------------------------


@pytest.mark.parametrize("query", sorted(QUERIES))
@pytest.mark.parametrize(
    ("kind", "outcome", "error_code"),
    [
        (httpx.ReadTimeout, Outcome.TIMEOUT, "timeout"),
        (httpx.ConnectError, Outcome.PROVIDER_ERROR, "connect_error"),
        (httpx.ReadError, Outcome.PROVIDER_ERROR, "read_error"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_transport_fault_raises_a_transport_failure(
    query: str, kind: type[httpx.TransportError], outcome: Outcome, error_code: str
) -> None:
    raised = failure(raising(kind), QUERIES[query])

    assert (raised.error_code, raised.outcome) == (error_code, outcome)


def test_provider_hanging_past_its_timeout_raises_a_timeout() -> None:
    assert failure(hanging, QUERIES["balance"], timeout=0.2).outcome is Outcome.TIMEOUT


@pytest.mark.parametrize("status", [500, 502])
def test_http_error_page_raises_a_failure_named_by_status(status: int) -> None:
    assert (
        failure(raw_answer(b"<html>Bad Gateway</html>", status), QUERIES["balance"]).error_code
        == f"http_{status}"
    )


def test_http_error_status_with_json_raises_a_failure_named_by_status() -> None:
    assert failure(answer(BALANCE_OK, 503), QUERIES["balance"]).error_code == "http_503"


@pytest.mark.parametrize(
    "body", [[1, 2], {"result": "maybe"}, {"result": "error"}], ids=["list", "maybe", "no-code"]
)
def test_answer_of_no_documented_shape_raises_an_unexpected_answer(body: Any) -> None:
    assert failure(answer(body), QUERIES["balance"]).error_code == "unexpected_answer"
