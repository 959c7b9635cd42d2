"""The Telphin adapter: request bodies exactly as the provider's document shows them, and the
translation of every answer, error code and transport fault of both handlers (the call, `/`,
and the code check, `/auth/`) into a `SendResult` or a `CodeCheck`.

The provider is reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched. The document is
../shared/providers/telphin-flashcall.txt ("Телфин Flash Calls"); the tables below are copied
from it by hand, so that an edit of the adapter's list cannot silently agree with itself.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import httpx
import pytest

from tests.unit.stub_transport import Handler, answer, exchange, hanging, raising, raw_answer
from worker.core.verification import Channel, Outcome
from worker.providers.base import CodeCheck, DocumentedError, SendRequest, SendResult
from worker.providers.telphin import ERRORS, Telphin

BASE_URL = "https://flashcall.example.test"
APP_ID = "123xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
APP_SECRET = "321yyyyyyyyyyyyyyyyyyyyyy"
PHONE = "79991234567"
TELPHIN_NUMBER = "+79991234567"

T = TypeVar("T")

#: Section 4 of "Запрос на инициацию вызова": code -> the document's description.
DOCUMENTED_SEND_ERRORS: dict[str, str] = {
    "invalid_client": "Клиент, с указанными App ID и App Secret, не найден",
    "one_call_for_two_minutes": "На 1 Б-номер не может поступить 2 вызова с сервиса в течение 2-х минут",
    "ten_calls_per_day": "На 1 Б-номер не может поступить более 10 вызовов с сервиса в течение 1-х суток",
    "parameters_error": "Присланы не все параметры запроса или они имеют не верный тип",
    "direction_error": "Ошибка вызываемого номера. Для вызова доступны только РФ номера в формате +7 или 8",
    "service_is_not_connected": "Услуга «Flash Calls» не подключена",
}

#: Section 4 of "Запрос на аутентификацию" ("Арр" in Cyrillic letters, as the document has it).
DOCUMENTED_AUTH_ERRORS: dict[str, str] = {
    "invalid_client": "Клиент, с указанными \u0410\u0440\u0440 ID и \u0410\u0440\u0440 Secret, не найден",
    "code_lifetime_expired": "Время жизни кода аутентификации истекло",
    "auth_code_does_not_exist": "Для данного номера не существует кода аутентификации",
    "auth_attempts_ended": "Закончились попытки ввода кода аутентификации",
    "invalid_code": "Не верный код аутентификации",
    "parameters_error": "Присланы не все параметры запроса или они имеют не верный тип",
    "service_is_not_connected": "Услуга «Flash Calls» не подключена",
}

#: What each call error means to routing: (outcome, counts against the breaker).
EXPECTED_SEND_ERRORS: dict[str, tuple[Outcome, bool]] = {
    "invalid_client": (Outcome.PROVIDER_ERROR, True),
    "one_call_for_two_minutes": (Outcome.REFUSED, False),
    "ten_calls_per_day": (Outcome.REFUSED, False),
    "parameters_error": (Outcome.PROVIDER_ERROR, True),
    "direction_error": (Outcome.BAD_NUMBER, False),
    "service_is_not_connected": (Outcome.PROVIDER_ERROR, True),
}

#: What each check error means: the typed code is never matched; does the provider's breaker count it?
EXPECTED_AUTH_ERRORS: dict[str, bool] = {
    "invalid_client": True,
    "code_lifetime_expired": False,
    "auth_code_does_not_exist": False,
    "auth_attempts_ended": False,
    "invalid_code": False,
    "parameters_error": True,
    "service_is_not_connected": True,
}

DOCUMENTED_SEND = [error for error in ERRORS if error.request == "send"]
DOCUMENTED_AUTH = [error for error in ERRORS if error.request == "auth"]


def make_provider(*, timeout: float = 1.0) -> Telphin:
    return Telphin.from_config(
        "telphin",
        base_url=BASE_URL + "/",
        timeout=timeout,
        credentials={"app_id": APP_ID, "app_secret": APP_SECRET},
        options={},
    )


def send(handler: Handler, *, timeout: float = 1.0) -> tuple[SendResult, list[httpx.Request]]:
    request = SendRequest(channel=Channel.FLASHCALL, phone=PHONE, code_length=4)
    return exchange(make_provider(timeout=timeout), handler, lambda provider: provider.send(request))


def check(handler: Handler, code: str = "9999") -> tuple[CodeCheck, list[httpx.Request]]:
    return exchange(make_provider(), handler, lambda provider: provider.check_code(PHONE, code))


def error(description: Any) -> Handler:
    return answer({"status": "error", "description": description})


CALL_OK = answer({"status": "succes", "number": TELPHIN_NUMBER})
AUTH_OK = answer({"status": "succes", "number": TELPHIN_NUMBER, "auth_code": "9999"})


# --- the requests -----------------------------------------------------------------------


def test_call_is_a_json_post_to_the_root_handler() -> None:
    _, [sent] = send(CALL_OK)

    assert (sent.method, str(sent.url)) == ("POST", BASE_URL + "/")
    assert sent.headers["content-type"] == "application/json"


def test_call_body_holds_exactly_the_credentials_and_the_plus_seven_number() -> None:
    _, [sent] = send(CALL_OK)

    assert json.loads(sent.content) == {"app_id": APP_ID, "app_secret": APP_SECRET, "number": TELPHIN_NUMBER}


def test_check_is_a_json_post_to_the_auth_handler() -> None:
    _, [sent] = check(AUTH_OK)

    assert (sent.method, str(sent.url)) == ("POST", BASE_URL + "/auth/")
    assert sent.headers["content-type"] == "application/json"


def test_check_body_holds_exactly_the_credentials_the_number_and_the_typed_code() -> None:
    _, [sent] = check(AUTH_OK, code="0427")

    assert json.loads(sent.content) == {
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        "number": TELPHIN_NUMBER,
        "auth_code": "0427",
    }


def test_credentials_travel_only_in_the_body() -> None:
    _, [sent] = send(CALL_OK)

    assert "authorization" not in sent.headers
    assert APP_SECRET not in str(sent.url)


# --- what the provider supports -------------------------------------------------------


def test_provider_type_offers_flash_calls_with_app_credentials_and_no_options() -> None:
    assert (Telphin.type, Telphin.channels, Telphin.credential_names, Telphin.option_names) == (
        "telphin",
        frozenset({Channel.FLASHCALL}),
        frozenset({"app_id", "app_secret"}),
        frozenset(),
    )


@pytest.mark.parametrize(
    ("channel", "code_length", "previous_ref", "supported"),
    [
        (Channel.FLASHCALL, 4, None, True),
        (Channel.FLASHCALL, 3, None, False),
        (Channel.FLASHCALL, 5, None, False),
        (Channel.FLASHCALL, 6, None, False),
        (Channel.VOICE, 4, None, False),
        (Channel.SMS, 4, None, False),
        (Channel.SMS, 4, "1234", False),
    ],
)
def test_supports_only_four_digit_flash_calls(
    channel: Channel, code_length: int, previous_ref: str | None, supported: bool
) -> None:
    assert make_provider().supports(channel, code_length, previous_ref) is supported


def test_telphin_generates_the_code_not_the_router() -> None:
    assert make_provider().router_generates_code(Channel.FLASHCALL, 4) is False


# --- the call's answers ---------------------------------------------------------------


def test_succes_answer_is_delivered_with_the_code_left_to_telphin() -> None:
    result, _ = send(CALL_OK)

    assert result == SendResult(
        outcome=Outcome.DELIVERED, ref=None, code=None, price=None, provider_checks_code=True
    )


def test_succes_answer_without_the_echoed_number_is_still_delivered() -> None:
    result, _ = send(answer({"status": "succes"}))

    assert result.outcome is Outcome.DELIVERED


def test_success_spelled_correctly_is_not_the_documented_answer() -> None:
    result, _ = send(answer({"status": "success", "number": TELPHIN_NUMBER}))

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True
    )


def test_succes_answer_with_a_status_other_than_200_is_named_by_the_status() -> None:
    result, _ = send(answer({"status": "succes", "number": TELPHIN_NUMBER}, status=500))

    assert result == SendResult(outcome=Outcome.PROVIDER_ERROR, error_code="http_500", breaker_failure=True)


# --- error codes: the lists against the document ----------------------------------------


def test_send_error_list_holds_exactly_the_documents_codes_and_descriptions() -> None:
    assert {error.code: error.meaning for error in DOCUMENTED_SEND} == DOCUMENTED_SEND_ERRORS


def test_auth_error_list_holds_exactly_the_documents_codes_and_descriptions() -> None:
    assert {error.code: error.meaning for error in DOCUMENTED_AUTH} == DOCUMENTED_AUTH_ERRORS


def test_error_list_holds_nothing_but_the_two_tables() -> None:
    assert len(ERRORS) == len(DOCUMENTED_SEND_ERRORS) + len(DOCUMENTED_AUTH_ERRORS)


def test_expected_tables_in_this_test_cover_exactly_the_documented_codes() -> None:
    assert (set(EXPECTED_SEND_ERRORS), set(EXPECTED_AUTH_ERRORS)) == (
        set(DOCUMENTED_SEND_ERRORS),
        set(DOCUMENTED_AUTH_ERRORS),
    )


# --- error codes: the call --------------------------------------------------------------


@pytest.mark.parametrize("documented", DOCUMENTED_SEND, ids=lambda error: error.code)
def test_every_listed_send_error_is_classified_as_its_list_entry_says(documented: DocumentedError) -> None:
    result, _ = send(error(documented.code))

    assert result == SendResult(
        outcome=documented.classification.outcome,
        error_code=documented.code,
        breaker_failure=documented.classification.breaker_failure,
    )


@pytest.mark.parametrize(
    ("error_code", "outcome", "breaker_failure"),
    [(code, outcome, breaker) for code, (outcome, breaker) in EXPECTED_SEND_ERRORS.items()],
)
def test_documented_send_error_has_the_expected_outcome_and_breaker_effect(
    error_code: str, outcome: Outcome, breaker_failure: bool
) -> None:
    result, _ = send(error(error_code))

    assert (result.outcome, result.breaker_failure, result.error_code, result.ref) == (
        outcome,
        breaker_failure,
        error_code,
        None,
    )


def test_unknown_send_error_is_a_provider_error_kept_verbatim() -> None:
    result, _ = send(error("Something_New_Happened"))

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="Something_New_Happened", breaker_failure=True
    )


def test_documented_error_answered_with_an_http_error_status_is_read_by_its_code() -> None:
    result, _ = send(answer({"status": "error", "description": "direction_error"}, status=400))

    assert (result.outcome, result.error_code, result.breaker_failure) == (
        Outcome.BAD_NUMBER,
        "direction_error",
        False,
    )


# --- error codes: the check -------------------------------------------------------------


def test_succes_check_matches_the_code() -> None:
    verdict, _ = check(AUTH_OK)

    assert verdict == CodeCheck(matched=True)


@pytest.mark.parametrize("documented", DOCUMENTED_AUTH, ids=lambda error: error.code)
def test_every_listed_auth_error_is_a_mismatch_counted_as_its_list_entry_says(
    documented: DocumentedError,
) -> None:
    verdict, _ = check(error(documented.code))

    assert verdict == CodeCheck(
        matched=False, error_code=documented.code, breaker_failure=documented.classification.breaker_failure
    )


@pytest.mark.parametrize(("error_code", "breaker_failure"), list(EXPECTED_AUTH_ERRORS.items()))
def test_documented_auth_error_has_the_expected_verdict(error_code: str, breaker_failure: bool) -> None:
    verdict, _ = check(error(error_code))

    assert verdict == CodeCheck(matched=False, error_code=error_code, breaker_failure=breaker_failure)


def test_unknown_auth_error_is_a_provider_fault_kept_verbatim() -> None:
    verdict, _ = check(error("Something_New_Happened"))

    assert verdict == CodeCheck(matched=False, error_code="Something_New_Happened", breaker_failure=True)


def test_call_only_error_answered_to_a_check_is_a_provider_fault() -> None:
    verdict, _ = check(error("one_call_for_two_minutes"))

    assert verdict == CodeCheck(matched=False, error_code="one_call_for_two_minutes", breaker_failure=True)


def test_check_answered_success_spelled_correctly_does_not_match() -> None:
    verdict, _ = check(answer({"status": "success", "number": TELPHIN_NUMBER, "auth_code": "9999"}))

    assert verdict == CodeCheck(matched=False, error_code="unexpected_answer", breaker_failure=True)


# --- malformed answers and transport faults -------------------------------------------

WRONG_SHAPES = [
    pytest.param([1, 2, 3], id="list"),
    pytest.param("succes", id="string"),
    pytest.param({}, id="empty-object"),
    pytest.param({"number": TELPHIN_NUMBER}, id="no-status"),
    pytest.param({"status": "ok"}, id="status-ok"),
    pytest.param({"status": "error"}, id="error-without-description"),
    pytest.param({"status": "error", "description": ""}, id="empty-description"),
    pytest.param({"status": "error", "description": 42}, id="numeric-description"),
    pytest.param({"status": "error", "description": None}, id="null-description"),
]


@pytest.mark.parametrize("body", WRONG_SHAPES)
def test_call_answered_json_of_the_wrong_shape_is_an_unexpected_answer(body: Any) -> None:
    result, _ = send(answer(body))

    assert (result.outcome, result.error_code, result.breaker_failure, result.uncertain) == (
        Outcome.PROVIDER_ERROR,
        "unexpected_answer",
        True,
        False,
    )


@pytest.mark.parametrize("body", WRONG_SHAPES)
def test_check_answered_json_of_the_wrong_shape_is_a_provider_fault(body: Any) -> None:
    verdict, _ = check(answer(body))

    assert verdict == CodeCheck(matched=False, error_code="unexpected_answer", breaker_failure=True)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_call_answered_an_http_error_page_is_a_provider_error_named_by_status(status: int) -> None:
    result, _ = send(raw_answer(b"<html><body>Bad Gateway</body></html>", status))

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code=f"http_{status}", breaker_failure=True
    )


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_check_answered_an_http_error_page_is_a_provider_fault_named_by_status(status: int) -> None:
    verdict, _ = check(raw_answer(b"<html><body>Bad Gateway</body></html>", status))

    assert verdict == CodeCheck(matched=False, error_code=f"http_{status}", breaker_failure=True)


def test_call_answered_200_with_a_body_that_is_not_json_is_a_provider_error() -> None:
    result, _ = send(raw_answer(b"OK, calling", 200))

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="invalid_json", breaker_failure=True
    )


@pytest.mark.parametrize(
    ("kind", "outcome", "error_code", "uncertain"),
    [
        (httpx.ReadTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.ConnectError, Outcome.PROVIDER_ERROR, "connect_error", False),
        (httpx.ReadError, Outcome.PROVIDER_ERROR, "read_error", True),
        (httpx.RemoteProtocolError, Outcome.PROVIDER_ERROR, "protocol_error", True),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_call_transport_fault_is_a_breaker_failure_without_raising(
    kind: type[httpx.TransportError], outcome: Outcome, error_code: str, uncertain: bool
) -> None:
    result, _ = send(raising(kind))

    assert result == SendResult(
        outcome=outcome, error_code=error_code, breaker_failure=True, uncertain=uncertain
    )


@pytest.mark.parametrize(
    ("kind", "error_code"),
    [
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectError, "connect_error"),
        (httpx.ReadError, "read_error"),
        (httpx.RemoteProtocolError, "protocol_error"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_check_transport_fault_is_a_provider_fault_without_raising(
    kind: type[httpx.TransportError], error_code: str
) -> None:
    verdict, _ = check(raising(kind))

    assert verdict == CodeCheck(matched=False, error_code=error_code, breaker_failure=True)


def test_call_hanging_past_the_timeout_is_a_timeout() -> None:
    result, _ = send(hanging, timeout=0.2)

    assert result == SendResult(
        outcome=Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True
    )
