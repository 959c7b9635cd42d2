"""The MobilGroup adapter: request bodies exactly as the provider's document's examples write
them, both API key placements, and the translation of every answer, error code and transport
fault into an `Outcome`.

The provider is reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched. The document is
../shared/providers/mobilgroup-voice-password.txt ("Описание API услуги Авторизация по звонку /
Flash-Call").
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.unit.stub_transport import Handler, answer, exchange, hanging, raising, raw_answer
from worker.core.errors import ConfigurationError
from worker.core.verification import Channel, Outcome
from worker.providers.base import DocumentedError, SendRequest, SendResult
from worker.providers.mobilgroup import ERRORS, SEND_ERRORS, MobilGroup
from worker.providers.registry import PROVIDER_TYPES
from worker.providers.voicepassword.adapter import SEND_ERRORS as VOICEPASSWORD_SEND_ERRORS

BASE_URL = "https://voice.mobilgroup.example.test"
API_KEY = "mg-test-key-9d41"
PHONE = "79999999999"
"""The number of the document's examples."""

#: Section 4 of the document, "Описание кодов ошибок, возвращаемых сервером", in its order.
DOCUMENTED_ERRORS: list[tuple[str, str]] = [
    ("unknown_request", "Ошибочный запрос"),
    ("authorisation_failed", "Ошибка авторизации"),
    ("user_disabled", "Ваш аккаунт заблокирован"),
    ("number_is_empty", "Некорректно указан номер абонента"),
    ("number_not_valid", "Не удалось определить направление"),
    ("number_not_permitted", "Звонки на данное направление запрещены"),
    ("not_enough_money", "Недостаточно средств"),
    ("ani_phone_not_valid", "Указан не прописанный в ЛК номер телефона"),
]

#: What each documented error code means to routing: (outcome, counts against the breaker).
EXPECTED_ERRORS: dict[str, tuple[Outcome, bool]] = {
    "unknown_request": (Outcome.PROVIDER_ERROR, True),
    "authorisation_failed": (Outcome.PROVIDER_ERROR, True),
    "user_disabled": (Outcome.PROVIDER_ERROR, True),
    "number_is_empty": (Outcome.BAD_NUMBER, False),
    "number_not_valid": (Outcome.REFUSED, False),
    "number_not_permitted": (Outcome.REFUSED, False),
    "not_enough_money": (Outcome.NOT_ENOUGH_MONEY, True),
    "ani_phone_not_valid": (Outcome.PROVIDER_ERROR, True),
}

OK = answer({"result": "ok", "id": "1234", "number": PHONE, "price": "0.35", "code": "4821"})


def make_provider(options: dict[str, str] | None = None, *, timeout: float = 1.0) -> MobilGroup:
    return MobilGroup.from_config(
        "mg",
        base_url=BASE_URL + "/",
        timeout=timeout,
        credentials={"api_key": API_KEY},
        options=options or {},
    )


def send(
    handler: Handler, request: SendRequest, *, options: dict[str, str] | None = None, timeout: float = 1.0
) -> tuple[SendResult, list[httpx.Request]]:
    return exchange(make_provider(options, timeout=timeout), handler, lambda p: p.send(request))


def flashcall(code: str | None = None, code_length: int = 4, **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=PHONE, code_length=code_length, code=code, **extra)


def voice(code: str | None = "1234", **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.VOICE, phone=PHONE, code_length=4, code=code, **extra)


def sms_follow_up(previous_ref: str = "1234") -> SendRequest:
    return SendRequest(channel=Channel.SMS, phone=PHONE, code_length=4, previous_ref=previous_ref)


def sent(request: SendRequest, options: dict[str, str] | None = None) -> httpx.Request:
    _, seen = send(OK, request, options=options)
    assert len(seen) == 1
    return seen[0]


def sent_body(request: SendRequest, options: dict[str, str] | None = None) -> Any:
    return json.loads(sent(request, options).content)


SECURITY = {"api_key_in": "security"}


# --- the request: the document's examples, with the key in the security section ------------


def test_example_1_flash_call_without_a_spoken_code() -> None:
    body = sent_body(flashcall(), SECURITY)

    assert body == {"security": {"apiKey": API_KEY}, "number": PHONE, "capacity": "4"}


def test_example_2_voice_call_speaking_the_caller_numbers_last_digits() -> None:
    body = sent_body(voice(code=None), SECURITY)

    assert body == {"security": {"apiKey": API_KEY}, "number": PHONE, "voice": {}}


def test_example_3_voice_call_speaking_the_clients_code() -> None:
    body = sent_body(voice(code="1234"), SECURITY)

    assert body == {"security": {"apiKey": API_KEY}, "number": PHONE, "voice": {"code": "1234"}}


def test_example_4_voice_call_repeating_the_code() -> None:
    body = sent_body(voice(code="1234"), {**SECURITY, "repeat": "1"})

    assert body == {
        "security": {"apiKey": API_KEY},
        "number": PHONE,
        "voice": {"code": "1234", "repeat": "1"},
    }


def test_example_5_voice_call_from_the_accounts_own_number() -> None:
    body = sent_body(voice(code="1234"), {**SECURITY, "repeat": "1", "ani": "74959999999"})

    assert body == {
        "security": {"apiKey": API_KEY},
        "number": PHONE,
        "voice": {"code": "1234", "repeat": "1", "ani": "74959999999"},
    }


def test_example_6_sms_with_the_code_of_an_unanswered_call() -> None:
    body = sent_body(sms_follow_up("1234"), SECURITY)

    assert body == {"security": {"apiKey": API_KEY}, "sms": {"id": "1234"}}


def test_security_section_comes_first_as_in_the_examples() -> None:
    assert list(sent_body(voice(), SECURITY)) == ["security", "number", "voice"]


# --- the request: what this document lacks -----------------------------------------------


@pytest.mark.parametrize("code_length", [4, 5, 6])
def test_flash_call_always_asks_the_service_for_a_code_of_capacity_digits(code_length: int) -> None:
    assert sent_body(flashcall(code_length=code_length)) == {"number": PHONE, "capacity": str(code_length)}


def test_flash_call_given_a_router_code_still_sends_capacity_without_a_flashcall_section() -> None:
    assert sent_body(flashcall(code="1234")) == {"number": PHONE, "capacity": "4"}


def test_callback_url_is_never_sent() -> None:
    url = "https://router.example.test/callbacks/mobilgroup/tok-1"

    assert sent_body(flashcall(callback_url=url)) == {"number": PHONE, "capacity": "4"}


def test_repeat_option_zero_sends_no_repeat() -> None:
    assert sent_body(voice(code="1234"), {"repeat": "0"}) == {"number": PHONE, "voice": {"code": "1234"}}


# --- the API key: header or security section ------------------------------------------------


def test_api_key_travels_in_the_authorization_header_by_default() -> None:
    request = sent(flashcall())

    assert request.headers["authorization"] == API_KEY
    assert json.loads(request.content) == {"number": PHONE, "capacity": "4"}


def test_header_placement_puts_the_key_nowhere_in_the_body() -> None:
    request = sent(voice(), {"api_key_in": "header", "repeat": "1", "ani": "74959999999"})

    assert "security" not in json.loads(request.content)
    assert API_KEY.encode() not in request.content


def test_security_placement_sends_no_authorization_header() -> None:
    request = sent(flashcall(), SECURITY)

    assert "authorization" not in request.headers
    assert json.loads(request.content)["security"] == {"apiKey": API_KEY}


def test_unknown_key_placement_is_a_configuration_error_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match="api_key_in"):
        make_provider({"api_key_in": "query"})


def test_request_is_a_json_post_to_the_send_handler_with_only_the_documented_headers() -> None:
    request = sent(flashcall())

    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "/api/voice-password/send/"
    assert request.headers["content-type"] == "application/json"
    # Unlike VoicePassword's, this document's header table has no Charset.
    assert "charset" not in request.headers


# --- what the provider supports -----------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "code_length", "previous_ref", "supported"),
    [
        (Channel.FLASHCALL, 3, None, False),
        (Channel.FLASHCALL, 4, None, True),
        (Channel.FLASHCALL, 6, None, True),
        (Channel.FLASHCALL, 7, None, False),
        (Channel.VOICE, 4, None, True),
        (Channel.VOICE, 5, None, False),
        (Channel.SMS, 4, None, False),
        (Channel.SMS, 4, "1234", True),
    ],
)
def test_supports_flash_calls_of_4_to_6_digits_voice_of_4_and_sms_only_after_a_call(
    channel: Channel, code_length: int, previous_ref: str | None, supported: bool
) -> None:
    assert make_provider().supports(channel, code_length, previous_ref) is supported


@pytest.mark.parametrize(
    ("channel", "code_length", "router_generates"),
    [
        (Channel.FLASHCALL, 4, False),
        (Channel.FLASHCALL, 6, False),
        (Channel.VOICE, 4, True),
        (Channel.SMS, 4, False),
    ],
)
def test_router_generates_only_voice_codes_since_flash_codes_are_always_the_services(
    channel: Channel, code_length: int, router_generates: bool
) -> None:
    assert make_provider().router_generates_code(channel, code_length) is router_generates


def test_is_registered_as_mobilgroup_with_every_channel_and_an_api_key() -> None:
    assert PROVIDER_TYPES["mobilgroup"] is MobilGroup
    assert MobilGroup.channels == frozenset(Channel)
    assert MobilGroup.credential_names == frozenset({"api_key"})
    assert MobilGroup.option_names == frozenset({"api_key_in", "ani", "repeat"})


def test_has_no_balance_or_call_state_to_tell() -> None:
    provider = make_provider()

    balance, seen = exchange(provider, OK, lambda p: p.balance())
    status, _ = exchange(provider, OK, lambda p: p.call_status("1234"))

    assert (balance, status, seen) == (None, None, [])


# --- success answers ----------------------------------------------------------------------


def test_flash_call_answer_is_delivered_with_ref_service_code_and_price() -> None:
    result, _ = send(OK, flashcall())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="1234", code="4821", price=Decimal("0.35"))


def test_flash_call_answer_returns_the_services_code_even_when_the_router_had_one() -> None:
    result, _ = send(OK, flashcall(code="1111"))

    assert result.code == "4821"


def test_voice_call_with_the_clients_code_returns_no_code() -> None:
    result, _ = send(OK, voice(code="1234"))

    assert (result.outcome, result.code) == (Outcome.DELIVERED, None)


def test_voice_call_without_a_code_returns_the_services_code() -> None:
    result, _ = send(OK, voice(code=None))

    assert result.code == "4821"


def test_sms_follow_up_answer_is_delivered_without_a_code() -> None:
    ok = answer({"result": "ok", "id": "1235", "number": PHONE, "price": "3.30", "code": "4821"})

    result, _ = send(ok, sms_follow_up())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="1235", code=None, price=Decimal("3.30"))


@pytest.mark.parametrize(
    "body",
    [{"result": "ok", "price": "0.35", "code": "4821"}, {"result": "ok", "id": "", "code": "4821"}],
    ids=["missing", "empty"],
)
def test_ok_without_an_id_is_an_unexpected_answer(body: dict[str, Any]) -> None:
    result, _ = send(answer(body), flashcall())

    assert result == SendResult(Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True)


def test_flash_call_ok_without_the_generated_code_is_an_unexpected_answer() -> None:
    result, _ = send(answer({"result": "ok", "id": "7", "price": "0.35"}), flashcall())

    assert result == SendResult(Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True)


# --- error codes --------------------------------------------------------------------------


def error(error_code: str) -> Handler:
    return answer({"result": "error", "error_code": error_code})


def test_error_list_holds_the_documents_codes_and_words_verbatim_in_its_order() -> None:
    assert [(e.code, e.meaning) for e in ERRORS] == DOCUMENTED_ERRORS


def test_every_error_is_an_answer_of_the_send_handler() -> None:
    assert {e.request for e in ERRORS} == {"send"}


def test_expected_table_in_this_test_covers_exactly_the_documented_codes() -> None:
    assert set(EXPECTED_ERRORS) == {code for code, _ in DOCUMENTED_ERRORS}


@pytest.mark.parametrize("documented", ERRORS, ids=lambda e: e.code)
def test_every_listed_error_is_classified_as_its_entry_says(documented: DocumentedError) -> None:
    result, _ = send(error(documented.code), flashcall())

    assert result == SendResult(
        outcome=documented.classification.outcome,
        error_code=documented.code,
        breaker_failure=documented.classification.breaker_failure,
    )


@pytest.mark.parametrize(
    ("error_code", "outcome", "breaker_failure"),
    [(code, outcome, breaker) for code, (outcome, breaker) in EXPECTED_ERRORS.items()],
)
def test_documented_error_code_has_the_expected_outcome_and_breaker_effect(
    error_code: str, outcome: Outcome, breaker_failure: bool
) -> None:
    result, _ = send(error(error_code), flashcall())

    assert (result.outcome, result.breaker_failure, result.error_code, result.ref) == (
        outcome,
        breaker_failure,
        error_code,
        None,
    )


@pytest.mark.parametrize("error_code", sorted(SEND_ERRORS))
def test_every_error_is_classified_as_voicepassword_classifies_the_same_code(error_code: str) -> None:
    assert SEND_ERRORS[error_code] == VOICEPASSWORD_SEND_ERRORS[error_code]


@pytest.mark.parametrize("error_code", ["number_in_spam_list", "code_not_valid"])
def test_voicepasswords_own_error_codes_are_unknown_here_and_so_a_provider_error(error_code: str) -> None:
    result, _ = send(error(error_code), flashcall())

    assert error_code not in SEND_ERRORS
    assert result == SendResult(Outcome.PROVIDER_ERROR, error_code=error_code, breaker_failure=True)


# --- malformed answers and transport faults -----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        ["ok", "1234"],
        {"result": "maybe", "id": "1"},
        {"result": "error"},
        {"result": "error", "error_code": 1},
    ],
    ids=["list", "result-maybe", "error-without-code", "numeric-error-code"],
)
def test_json_of_the_wrong_shape_is_an_unexpected_answer(body: Any) -> None:
    result, _ = send(answer(body), flashcall())

    assert result == SendResult(Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True)


@pytest.mark.parametrize("status", [500, 502, 429])
def test_http_error_status_with_a_page_is_a_provider_error_named_by_status(status: int) -> None:
    result, _ = send(raw_answer(b"<html>Bad Gateway</html>", status), flashcall())

    assert result == SendResult(Outcome.PROVIDER_ERROR, error_code=f"http_{status}", breaker_failure=True)


@pytest.mark.parametrize(
    ("kind", "outcome", "error_code", "uncertain"),
    [
        (httpx.ReadTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.ConnectError, Outcome.PROVIDER_ERROR, "connect_error", False),
        (httpx.RemoteProtocolError, Outcome.PROVIDER_ERROR, "protocol_error", True),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_transport_fault_is_a_breaker_failure_without_raising(
    kind: type[httpx.TransportError], outcome: Outcome, error_code: str, uncertain: bool
) -> None:
    result, _ = send(raising(kind), flashcall())

    assert result == SendResult(outcome, error_code=error_code, breaker_failure=True, uncertain=uncertain)


def test_provider_hanging_past_its_timeout_is_a_timeout() -> None:
    result, _ = send(hanging, flashcall(), timeout=0.2)

    assert result == SendResult(Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True)
