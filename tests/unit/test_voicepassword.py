"""The VoicePassword adapter: request bodies as the provider's document writes them, and the
translation of every answer, error code and transport fault into an `Outcome`.

The provider is reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched. The document is
../shared/providers/voicepassword.txt ("Описание API сервиса Flash-Call и Voice-Password").

The last section drives the transport production uses (httpx-aiohttp's `AiohttpTransport`)
over a stubbed aiohttp session that raises the exceptions aiohttp raises for refused,
reset and malformed connections, again without any network.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any, cast

import aiohttp
import httpx
import httpx_aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tests.unit.stub_transport import Handler, answer, exchange, hanging, raising, raw_answer
from worker.core.verification import Channel, Outcome
from worker.providers.base import SendRequest, SendResult, parse_price
from worker.providers.voicepassword.adapter import SEND_ERRORS, VoicePassword

BASE_URL = "https://vp.example.test"
API_KEY = "vp-test-key-5f2c"
PHONE = "79991234567"

#: Section 4 of the document, "Описание кодов ошибок, возвращаемых сервером" (send handler).
DOCUMENTED_SEND_ERRORS = frozenset(
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

#: What each documented error code means to routing: (outcome, counts against the breaker).
EXPECTED_SEND_ERRORS: dict[str, tuple[Outcome, bool]] = {
    "unknown_request": (Outcome.PROVIDER_ERROR, True),
    "authorisation_failed": (Outcome.PROVIDER_ERROR, True),
    "user_disabled": (Outcome.PROVIDER_ERROR, True),
    "number_is_empty": (Outcome.BAD_NUMBER, False),
    "number_not_valid": (Outcome.REFUSED, False),
    "number_not_permitted": (Outcome.REFUSED, False),
    "number_in_spam_list": (Outcome.REFUSED, False),
    "not_enough_money": (Outcome.NOT_ENOUGH_MONEY, True),
    "ani_phone_not_valid": (Outcome.PROVIDER_ERROR, True),
    "code_not_valid": (Outcome.PROVIDER_ERROR, True),
}


def make_provider(*, timeout: float = 1.0, options: dict[str, str] | None = None) -> VoicePassword:
    return VoicePassword.from_config(
        "vp",
        base_url=BASE_URL + "/",
        timeout=timeout,
        credentials={"api_key": API_KEY},
        options=options or {},
    )


def send(
    handler: Handler, request: SendRequest, *, timeout: float = 1.0, options: dict[str, str] | None = None
) -> tuple[SendResult, list[httpx.Request]]:
    return exchange(make_provider(timeout=timeout, options=options), handler, lambda p: p.send(request))


OK = answer({"result": "ok", "id": "1234", "number": PHONE, "price": "0.35", "code": "4821"})


def flashcall(code: str | None = "1234", code_length: int = 4, **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=PHONE, code_length=code_length, code=code, **extra)


def voice(code: str | None = "1234", **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.VOICE, phone=PHONE, code_length=4, code=code, **extra)


def sms_follow_up(previous_ref: str = "1234") -> SendRequest:
    return SendRequest(channel=Channel.SMS, phone=PHONE, code_length=4, previous_ref=previous_ref)


def sent_body(request: SendRequest, *, options: dict[str, str] | None = None) -> Any:
    _, seen = send(OK, request, options=options)
    assert len(seen) == 1
    return json.loads(seen[0].content)


# --- the request ------------------------------------------------------------------------


def test_flash_call_with_a_router_code_sends_it_in_the_flashcall_section() -> None:
    assert sent_body(flashcall(code="1234")) == {"number": PHONE, "flashcall": {"code": "1234"}}


def test_flash_call_with_a_service_code_sends_the_code_length_as_capacity_string() -> None:
    assert sent_body(flashcall(code=None, code_length=5)) == {"number": PHONE, "capacity": "5"}


def test_voice_call_with_a_router_code_sends_it_in_the_voice_section() -> None:
    assert sent_body(voice(code="1234")) == {"number": PHONE, "voice": {"code": "1234"}}


def test_voice_call_without_a_code_sends_an_empty_voice_section() -> None:
    assert sent_body(voice(code=None)) == {"number": PHONE, "voice": {}}


def test_voice_call_repeats_the_code_and_calls_from_the_configured_ani() -> None:
    body = sent_body(voice(code="1234"), options={"repeat": "1", "ani": "74959999999"})

    assert body == {"number": PHONE, "voice": {"code": "1234", "repeat": "1", "ani": "74959999999"}}


def test_repeat_option_zero_sends_no_repeat() -> None:
    assert sent_body(voice(code="1234"), options={"repeat": "0"}) == {
        "number": PHONE,
        "voice": {"code": "1234"},
    }


def test_sms_follow_up_names_only_the_earlier_call() -> None:
    assert sent_body(sms_follow_up(previous_ref="98765")) == {"sms": {"id": "98765"}}


def test_callback_url_is_sent_when_given() -> None:
    url = "https://router.example.test/callbacks/voicepassword/tok-1"

    body = sent_body(flashcall(code="1234", callback_url=url))

    assert body == {"number": PHONE, "flashcall": {"code": "1234"}, "callback_url": url}


def test_callback_url_is_left_out_when_not_given() -> None:
    assert "callback_url" not in sent_body(flashcall(code=None, code_length=4))


def test_request_is_a_json_post_to_the_send_handler() -> None:
    _, seen = send(OK, flashcall())

    assert seen[0].method == "POST"
    assert str(seen[0].url) == BASE_URL + "/api/voice-password/send/"
    assert seen[0].headers["content-type"] == "application/json"


def test_api_key_travels_in_the_authorization_header() -> None:
    _, seen = send(OK, flashcall())

    assert seen[0].headers["authorization"] == API_KEY


def test_api_key_never_appears_in_the_body() -> None:
    _, seen = send(OK, voice(), options={"repeat": "1", "ani": "74959999999"})

    body = json.loads(seen[0].content)
    assert "security" not in body
    assert API_KEY.encode() not in seen[0].content


# --- what the provider supports -------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "code_length", "previous_ref", "supported"),
    [
        (Channel.FLASHCALL, 3, None, False),
        (Channel.FLASHCALL, 4, None, True),
        (Channel.FLASHCALL, 5, None, True),
        (Channel.FLASHCALL, 6, None, True),
        (Channel.FLASHCALL, 7, None, False),
        (Channel.VOICE, 4, None, True),
        (Channel.VOICE, 5, None, False),
        (Channel.VOICE, 6, None, False),
        (Channel.SMS, 4, None, False),
        (Channel.SMS, 4, "1234", True),
        (Channel.SMS, 6, "1234", True),
    ],
)
def test_supports_flash_calls_of_4_to_6_digits_voice_of_4_and_sms_only_after_a_call(
    channel: Channel, code_length: int, previous_ref: str | None, supported: bool
) -> None:
    assert make_provider().supports(channel, code_length, previous_ref) is supported


@pytest.mark.parametrize(
    ("channel", "code_length", "router_generates"),
    [
        (Channel.FLASHCALL, 4, True),
        (Channel.FLASHCALL, 5, False),
        (Channel.FLASHCALL, 6, False),
        (Channel.VOICE, 4, True),
        (Channel.SMS, 4, False),
    ],
)
def test_router_generates_four_digit_call_codes_and_the_service_generates_longer_ones(
    channel: Channel, code_length: int, router_generates: bool
) -> None:
    assert make_provider().router_generates_code(channel, code_length) is router_generates


# --- success answers ------------------------------------------------------------------


def test_ok_answer_is_delivered_with_ref_and_price() -> None:
    result, _ = send(OK, flashcall(code="1234"))

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="1234", code=None, price=Decimal("0.35"))


def test_numeric_id_becomes_a_string_ref() -> None:
    result, _ = send(answer({"result": "ok", "id": 1234, "price": "0.35"}), flashcall(code="1234"))

    assert result.ref == "1234"


def test_price_is_parsed_as_an_exact_decimal() -> None:
    result, _ = send(answer({"result": "ok", "id": "1", "price": "0.35"}), flashcall(code="1234"))

    assert result.price == Decimal("0.35")


def test_missing_price_is_none() -> None:
    result, _ = send(answer({"result": "ok", "id": "1"}), flashcall(code="1234"))

    assert result.outcome is Outcome.DELIVERED
    assert result.price is None


def test_service_generated_flash_code_is_returned() -> None:
    ok = answer({"result": "ok", "id": "7", "price": "0.35", "code": "48213"})

    result, _ = send(ok, flashcall(code=None, code_length=5))

    assert result.outcome is Outcome.DELIVERED
    assert result.code == "48213"


def test_provider_code_is_ignored_when_the_router_sent_its_own() -> None:
    result, _ = send(OK, flashcall(code="1234"))

    assert result.code is None


def test_sms_follow_up_answer_is_delivered_without_a_code() -> None:
    ok = answer({"result": "ok", "id": "1235", "number": PHONE, "price": "3.30", "message": "Ваш код: 1234"})

    result, _ = send(ok, sms_follow_up())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="1235", code=None, price=Decimal("3.30"))


@pytest.mark.parametrize(
    "body",
    [
        {"result": "ok", "price": "0.35"},
        {"result": "ok", "id": "", "price": "0.35"},
        {"result": "ok", "id": None},
        {"result": "ok", "id": True},
        {"result": "ok", "id": ["1234"]},
    ],
    ids=["missing", "empty", "null", "bool", "list"],
)
def test_ok_without_a_usable_id_is_a_provider_error(body: dict[str, Any]) -> None:
    result, _ = send(answer(body), flashcall(code="1234"))

    assert result.outcome is Outcome.PROVIDER_ERROR
    assert result.error_code == "unexpected_answer"
    assert result.breaker_failure is True


@pytest.mark.parametrize(
    "body",
    [
        {"result": "ok", "id": "7", "price": "0.35"},
        {"result": "ok", "id": "7", "code": "XXXX"},
        {"result": "ok", "id": "7", "code": None},
    ],
    ids=["missing", "not-digits", "null"],
)
def test_capacity_mode_ok_without_the_generated_code_is_a_provider_error(body: dict[str, Any]) -> None:
    result, _ = send(answer(body), flashcall(code=None, code_length=5))

    assert result.outcome is Outcome.PROVIDER_ERROR
    assert result.error_code == "unexpected_answer"
    assert result.breaker_failure is True


# --- error codes ----------------------------------------------------------------------


def error(error_code: Any) -> Handler:
    return answer({"result": "error", "error_code": error_code})


def test_error_table_covers_exactly_the_documented_codes() -> None:
    assert set(SEND_ERRORS) == DOCUMENTED_SEND_ERRORS


def test_expected_table_in_this_test_covers_exactly_the_documented_codes() -> None:
    assert set(EXPECTED_SEND_ERRORS) == DOCUMENTED_SEND_ERRORS


@pytest.mark.parametrize("error_code", sorted(SEND_ERRORS))
def test_every_error_code_is_classified_as_its_table_entry_says(error_code: str) -> None:
    result, _ = send(error(error_code), flashcall())

    assert result == SendResult(
        outcome=SEND_ERRORS[error_code].outcome,
        error_code=error_code,
        breaker_failure=SEND_ERRORS[error_code].breaker_failure,
    )


@pytest.mark.parametrize(
    "error_code",
    sorted(
        code for code, kind in SEND_ERRORS.items() if kind.outcome in {Outcome.BAD_NUMBER, Outcome.REFUSED}
    ),
)
def test_no_error_about_the_users_number_counts_against_the_breaker(error_code: str) -> None:
    result, _ = send(error(error_code), flashcall())

    assert result.breaker_failure is False


@pytest.mark.parametrize(
    ("error_code", "outcome", "breaker_failure"),
    [(code, outcome, breaker) for code, (outcome, breaker) in EXPECTED_SEND_ERRORS.items()],
)
def test_documented_error_code_has_the_expected_outcome_and_breaker_effect(
    error_code: str, outcome: Outcome, breaker_failure: bool
) -> None:
    result, _ = send(error(error_code), flashcall())

    assert result.outcome is outcome
    assert result.breaker_failure is breaker_failure
    assert result.error_code == error_code
    assert result.ref is None


def test_not_enough_money_is_an_account_error_that_counts_against_the_breaker() -> None:
    result, _ = send(error("not_enough_money"), flashcall())

    assert (result.outcome, result.breaker_failure) == (Outcome.NOT_ENOUGH_MONEY, True)


def test_spam_listed_number_is_refused_without_counting_against_the_breaker() -> None:
    result, _ = send(error("number_in_spam_list"), flashcall())

    assert (result.outcome, result.breaker_failure) == (Outcome.REFUSED, False)


def test_unknown_error_code_is_a_provider_error_kept_verbatim() -> None:
    result, _ = send(error("Something_New_Happened"), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="Something_New_Happened", breaker_failure=True
    )


# --- malformed answers and transport faults -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "outcome", "error_code", "uncertain"),
    [
        (httpx.ReadTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.ConnectTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.WriteTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.PoolTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.ConnectError, Outcome.PROVIDER_ERROR, "connect_error", False),
        (httpx.ReadError, Outcome.PROVIDER_ERROR, "read_error", True),
        (httpx.RemoteProtocolError, Outcome.PROVIDER_ERROR, "protocol_error", True),
        (httpx.WriteError, Outcome.PROVIDER_ERROR, "write_error", True),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_transport_fault_is_classified_as_a_breaker_failure_without_raising(
    kind: type[httpx.TransportError], outcome: Outcome, error_code: str, uncertain: bool
) -> None:
    """`uncertain`: no answer tells whether the call was placed; only a connection never
    made surely carried no request."""
    result, _ = send(raising(kind), flashcall())

    assert result == SendResult(
        outcome=outcome, error_code=error_code, breaker_failure=True, uncertain=uncertain
    )


def test_provider_hanging_past_its_timeout_is_a_timeout() -> None:
    result, _ = send(hanging, flashcall(), timeout=0.2)

    assert result == SendResult(
        outcome=Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True
    )


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_http_error_status_with_a_non_json_body_is_a_provider_error_named_by_status(status: int) -> None:
    result, _ = send(raw_answer(b"<html><body>Bad Gateway</body></html>", status), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code=f"http_{status}", breaker_failure=True
    )


def test_http_error_status_with_a_json_body_is_named_by_status() -> None:
    result, _ = send(answer({"result": "error", "error_code": "number_not_valid"}, 500), flashcall())

    assert result == SendResult(outcome=Outcome.PROVIDER_ERROR, error_code="http_500", breaker_failure=True)


@pytest.mark.parametrize("content", [b"<html>OK</html>", b"", b'{"result": "ok"'])
def test_http_200_with_a_body_that_is_not_json_is_a_provider_error(content: bytes) -> None:
    result, _ = send(raw_answer(content, 200), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="invalid_json", breaker_failure=True
    )


@pytest.mark.parametrize(
    "body",
    [
        ["ok", "1234"],
        "ok",
        {"result": "maybe", "id": "1234"},
        {"id": "1234"},
        {"result": "error"},
        {"result": "error", "error_code": 42},
        {"result": "error", "error_code": None},
    ],
    ids=[
        "list",
        "string",
        "result-maybe",
        "no-result",
        "error-without-code",
        "numeric-error-code",
        "null-error-code",
    ],
)
def test_json_of_the_wrong_shape_is_an_unexpected_answer(body: Any) -> None:
    result, _ = send(answer(body), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True
    )


def test_http_200_carrying_an_error_is_not_delivered() -> None:
    result, _ = send(answer({"result": "error", "error_code": "authorisation_failed"}), flashcall())

    assert result.outcome is Outcome.PROVIDER_ERROR
    assert result.error_code == "authorisation_failed"
    assert result.ref is None


# --- prices ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "price"),
    [
        ("0.35", Decimal("0.35")),
        ("3.30", Decimal("3.30")),
        ("0", Decimal("0")),
        (" 0.35 ", Decimal("0.35")),
        (2, Decimal("2")),
        (0, Decimal("0")),
    ],
)
def test_parse_price_reads_decimal_strings_and_integers(value: object, price: Decimal) -> None:
    assert parse_price(value) == price


@pytest.mark.parametrize(
    "value",
    ["", "abc", "0,35", "-0.35", "NaN", "Infinity", "-Infinity", "sNaN", -1, True, None, ["0.35"], {}],
)
def test_parse_price_answers_none_for_what_is_not_a_finite_non_negative_price(value: object) -> None:
    assert parse_price(value) is None


def test_parse_price_keeps_the_written_precision() -> None:
    price = parse_price("0.350")

    assert price == Decimal("0.35")
    assert str(price) == "0.350"


# --- the production transport (httpx-aiohttp) over a stubbed aiohttp session -----------


class _FailingRequest:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def __aenter__(self) -> None:
        raise self._error


class _StubSession:
    """Stands in for aiohttp.ClientSession: every request fails with one aiohttp exception."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def request(self, **_: Any) -> _FailingRequest:
        return _FailingRequest(self._error)


def through_aiohttp(error: Exception) -> SendResult:
    provider = make_provider()
    session = cast(aiohttp.ClientSession, _StubSession(error))
    provider.set_transport(httpx_aiohttp.AiohttpTransport(client=lambda: session))

    async def run() -> SendResult:
        try:
            return await provider.send(flashcall())
        finally:
            await provider.aclose()

    return asyncio.run(run())


SEND_URL = URL(BASE_URL + "/api/voice-password/send/")


def refused() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("vp.example.test", 443, True, True, None, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connect call failed"))


def test_aiohttp_socket_read_timeout_is_a_timeout() -> None:
    result = through_aiohttp(aiohttp.SocketTimeoutError())

    assert result == SendResult(
        outcome=Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True
    )


def test_aiohttp_truncated_payload_is_a_read_error() -> None:
    result = through_aiohttp(aiohttp.ClientPayloadError("Response payload is not completed"))

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="read_error", breaker_failure=True, uncertain=True
    )


def test_aiohttp_connection_refused_is_a_connect_error() -> None:
    result = through_aiohttp(refused())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="connect_error", breaker_failure=True
    )


@pytest.mark.parametrize(
    "error",
    [aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError(104, "Connection reset by peer")],
    ids=["server-disconnected", "connection-reset"],
)
def test_aiohttp_connection_reset_is_a_provider_error_not_a_timeout(error: Exception) -> None:
    result = through_aiohttp(error)

    assert result.outcome is Outcome.PROVIDER_ERROR
    assert result.error_code in {"disconnected", "connection_reset"}
    assert result.breaker_failure is True


def test_aiohttp_malformed_http_answer_is_a_provider_error_without_raising() -> None:
    info = RequestInfo(SEND_URL, "POST", CIMultiDictProxy(CIMultiDict()), SEND_URL)
    error = aiohttp.ClientResponseError(info, (), status=400, message="Bad status line")

    result = through_aiohttp(error)

    assert result.outcome is Outcome.PROVIDER_ERROR
    assert result.breaker_failure is True
