"""The FlashingCall REST gateway adapter: request bodies exactly as the gateway's document
writes them, and the translation of every answer, error code and transport fault into an
`Outcome`.

The gateway is reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched. The document is
../shared/providers/flashingcall-rest-gateway.txt ("FlashingCall (VoiceCode)").
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.unit.stub_transport import Handler, answer, exchange, hanging, raising, raw_answer
from worker.core.errors import ConfigurationError
from worker.core.verification import Channel, Outcome
from worker.providers.base import DocumentedError, SendRequest, SendResult
from worker.providers.gateway import ERRORS, SEND_ERRORS, Gateway
from worker.providers.registry import PROVIDER_TYPES

BASE_URL = "https://gw.example.test/api/flashingcall"
LOGIN = "partner-login"
PASSWORD = "partner-secret-7c1e"
PHONE = "79991234567"

#: The document's table "Коды ошибок отправки" (code, description, HTTP status), verbatim,
#: and what each one means to routing: (outcome, counts against the breaker).
EXPECTED_ERRORS: dict[str, tuple[str, int, Outcome, bool]] = {
    "1": ("Service is unavailable", 503, Outcome.PROVIDER_ERROR, True),
    "2": ("Invalid IP-address", 403, Outcome.PROVIDER_ERROR, True),
    "3": ("Too many connections", 429, Outcome.PROVIDER_ERROR, True),
    "4": ("Invalid request", 400, Outcome.PROVIDER_ERROR, True),
    "5": ("Invalid login", 401, Outcome.PROVIDER_ERROR, True),
    "6": ("Invalid password", 401, Outcome.PROVIDER_ERROR, True),
    "7": ("serviceNumber is not defined", 400, Outcome.PROVIDER_ERROR, True),
    "8": ("destAddr is not correct", 406, Outcome.BAD_NUMBER, False),
    "9": ("Message type is not correct", 406, Outcome.PROVIDER_ERROR, True),
    "10": ("Prohibited sending duplicates", 409, Outcome.REFUSED, False),
    "11": ("Invalid TTL", 406, Outcome.PROVIDER_ERROR, True),
    "100": ("100", 500, Outcome.PROVIDER_ERROR, True),
}


def make_provider(*, timeout: float = 1.0, options: dict[str, str] | None = None) -> Gateway:
    return Gateway.from_config(
        "gw",
        base_url=BASE_URL,
        timeout=timeout,
        credentials={"login": LOGIN, "password": PASSWORD},
        options=options or {},
    )


def send(
    handler: Handler, request: SendRequest, *, timeout: float = 1.0, options: dict[str, str] | None = None
) -> tuple[SendResult, list[httpx.Request]]:
    return exchange(make_provider(timeout=timeout, options=options), handler, lambda p: p.send(request))


def gateway_error(code: Any, status: int, description: str = "Invalid request") -> Handler:
    """An error answer shaped as the document's example."""
    return answer(
        {"error": {"code": code, "description": description}, "extendedDescription": "details"}, status
    )


OK = answer({"messageId": "100001"})


def flashcall(code: str | None = "1234", code_length: int = 4) -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=PHONE, code_length=code_length, code=code)


def voice(code: str = "1234") -> SendRequest:
    return SendRequest(channel=Channel.VOICE, phone=PHONE, code_length=4, code=code)


def sent_body(request: SendRequest, *, options: dict[str, str] | None = None) -> Any:
    _, seen = send(OK, request, options=options)
    assert len(seen) == 1
    return json.loads(seen[0].content)


def document_body(text: str, ttl: int) -> dict[str, Any]:
    """The document's example request with our values."""
    return {
        "login": LOGIN,
        "password": PASSWORD,
        "destAddr": PHONE,
        "message": {"type": "FLASHINGCALL", "data": {"text": text, "ttl": ttl}},
    }


# --- the request ------------------------------------------------------------------------


def test_flash_call_with_a_4_digit_code_sends_the_documents_request() -> None:
    assert sent_body(flashcall("1234")) == document_body("1234", 1)


def test_flash_call_with_a_6_digit_code_sends_the_code_alone_as_text() -> None:
    assert sent_body(flashcall("123456", code_length=6)) == document_body("123456", 1)


def test_voicecode_variant_sends_the_same_flashingcall_request_with_the_code() -> None:
    assert sent_body(voice("4821"), options={"variant": "voicecode"}) == document_body("4821", 1)


@pytest.mark.parametrize("minutes", [1, 2, 3, 4, 5])
def test_ttl_option_is_sent_as_integer_minutes(minutes: int) -> None:
    body = sent_body(flashcall(), options={"ttl": str(minutes)})

    assert body["message"]["data"]["ttl"] == minutes
    assert type(body["message"]["data"]["ttl"]) is int


def test_ttl_defaults_to_one_minute() -> None:
    assert sent_body(flashcall())["message"]["data"]["ttl"] == 1


def test_voicecode_variant_sends_the_ttl_option() -> None:
    body = sent_body(voice(), options={"variant": "voicecode", "ttl": "3"})

    assert body == document_body("1234", 3)


def test_request_is_a_json_post_to_the_configured_url_itself() -> None:
    _, seen = send(OK, flashcall())

    assert seen[0].method == "POST"
    assert str(seen[0].url) == BASE_URL
    assert seen[0].headers["content-type"] == "application/json"


def test_credentials_travel_only_in_the_body() -> None:
    _, seen = send(OK, flashcall())

    assert "authorization" not in seen[0].headers
    assert PASSWORD not in str(seen[0].url)


def test_a_request_without_a_router_code_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="code"):
        send(OK, flashcall(code=None))


# --- configuration ----------------------------------------------------------------------


def test_gateway_is_registered_under_its_routing_type() -> None:
    assert PROVIDER_TYPES["gateway"] is Gateway


def test_credentials_are_login_and_password() -> None:
    assert Gateway.credential_names == frozenset({"login", "password"})


def test_options_are_variant_ttl_and_message_id_field() -> None:
    assert Gateway.option_names == frozenset({"variant", "ttl", "message_id_field"})


@pytest.mark.parametrize("ttl", ["0", "6", "-1", "1.5", "one", ""])
def test_ttl_outside_one_to_five_minutes_is_a_configuration_error(ttl: str) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        make_provider(options={"ttl": ttl})


@pytest.mark.parametrize("variant", ["voice", "FLASHCALL", ""])
def test_unknown_variant_is_a_configuration_error(variant: str) -> None:
    with pytest.raises(ConfigurationError, match="variant"):
        make_provider(options={"variant": variant})


def test_empty_message_id_field_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="message_id_field"):
        make_provider(options={"message_id_field": ""})


# --- what the provider supports -------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "channel", "code_length", "supported"),
    [
        ("flashcall", Channel.FLASHCALL, 3, False),
        ("flashcall", Channel.FLASHCALL, 4, True),
        ("flashcall", Channel.FLASHCALL, 5, False),
        ("flashcall", Channel.FLASHCALL, 6, True),
        ("flashcall", Channel.VOICE, 4, False),
        ("flashcall", Channel.SMS, 4, False),
        ("voicecode", Channel.VOICE, 4, True),
        ("voicecode", Channel.VOICE, 6, False),
        ("voicecode", Channel.FLASHCALL, 4, False),
        ("voicecode", Channel.SMS, 4, False),
    ],
)
def test_supports_only_its_variants_channel_and_code_lengths(
    variant: str, channel: Channel, code_length: int, supported: bool
) -> None:
    provider = make_provider(options={"variant": variant})

    assert provider.supports(channel, code_length, None) is supported


def test_variant_defaults_to_flash_calls() -> None:
    provider = make_provider()

    assert provider.supports(Channel.FLASHCALL, 4, None)
    assert not provider.supports(Channel.VOICE, 4, None)


@pytest.mark.parametrize(
    ("variant", "channel", "code_length"),
    [
        ("flashcall", Channel.FLASHCALL, 4),
        ("flashcall", Channel.FLASHCALL, 6),
        ("voicecode", Channel.VOICE, 4),
    ],
)
def test_router_generates_every_code(variant: str, channel: Channel, code_length: int) -> None:
    assert make_provider(options={"variant": variant}).router_generates_code(channel, code_length)


# --- success answers ------------------------------------------------------------------


def test_http_200_without_error_is_delivered_with_the_message_id_as_ref() -> None:
    result, _ = send(OK, flashcall())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="100001")


def test_numeric_message_id_becomes_a_string_ref() -> None:
    result, _ = send(answer({"messageId": 100001}), flashcall())

    assert result.ref == "100001"


def test_message_id_field_option_names_the_member_read_as_ref() -> None:
    result, _ = send(
        answer({"id": "abc-42", "messageId": "other"}), flashcall(), options={"message_id_field": "id"}
    )

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="abc-42")


def test_success_without_the_message_id_field_is_delivered_without_a_ref() -> None:
    result, _ = send(answer({"status": "accepted"}), flashcall())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref=None)


@pytest.mark.parametrize("value", ["", None, True, ["100001"], {"id": "1"}, 1.5])
def test_success_with_an_unusable_message_id_is_delivered_without_a_ref(value: Any) -> None:
    result, _ = send(answer({"messageId": value}), flashcall())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref=None)


def test_success_with_a_null_error_member_is_delivered() -> None:
    result, _ = send(answer({"error": None, "messageId": "7"}), flashcall())

    assert result == SendResult(outcome=Outcome.DELIVERED, ref="7")


def test_an_empty_json_object_is_an_unexpected_answer() -> None:
    result, _ = send(answer({}), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True
    )


# --- error codes ----------------------------------------------------------------------


def test_error_list_holds_every_row_of_the_documents_table_verbatim() -> None:
    listed = {error.code: (error.meaning, error.http_status, error.request) for error in ERRORS}

    assert listed == {
        code: (meaning, status, "send") for code, (meaning, status, _, _) in EXPECTED_ERRORS.items()
    }


def test_error_list_classifies_every_code_as_expected() -> None:
    assert {code: (kind.outcome, kind.breaker_failure) for code, kind in SEND_ERRORS.items()} == {
        code: (outcome, breaker) for code, (_, _, outcome, breaker) in EXPECTED_ERRORS.items()
    }


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.code)
def test_every_documented_error_at_its_http_status_is_classified_as_its_entry_says(
    error: DocumentedError,
) -> None:
    assert error.http_status is not None
    handler = gateway_error(int(error.code), error.http_status, error.meaning)

    result, _ = send(handler, flashcall())

    assert result == SendResult(
        outcome=error.classification.outcome,
        error_code=error.code,
        breaker_failure=error.classification.breaker_failure,
    )


@pytest.mark.parametrize(
    ("code", "outcome", "breaker_failure", "status"),
    [(code, outcome, breaker, status) for code, (_, status, outcome, breaker) in EXPECTED_ERRORS.items()],
)
def test_documented_error_has_the_expected_outcome_and_breaker_effect(
    code: str, outcome: Outcome, breaker_failure: bool, status: int
) -> None:
    result, _ = send(gateway_error(int(code), status), flashcall())

    assert (result.outcome, result.breaker_failure, result.error_code, result.ref) == (
        outcome,
        breaker_failure,
        code,
        None,
    )


def test_error_detail_keeps_the_http_status_and_the_documents_meaning() -> None:
    result, _ = send(gateway_error(8, 406), flashcall())

    assert result.detail == "HTTP 406: destAddr is not correct"


def test_error_detail_never_carries_the_gateways_extended_description() -> None:
    body = {"error": {"code": 8, "description": "x"}, "extendedDescription": f"{PHONE} is not correct"}

    result, _ = send(answer(body, 406), flashcall())

    assert PHONE not in result.detail


def test_http_200_carrying_an_error_is_classified_by_its_code() -> None:
    result, _ = send(gateway_error(8, 200, "destAddr is not correct"), flashcall())

    assert (result.outcome, result.error_code, result.breaker_failure) == (Outcome.BAD_NUMBER, "8", False)


def test_http_200_carrying_an_error_keeps_the_status_in_the_detail() -> None:
    result, _ = send(gateway_error(5, 200, "Invalid login"), flashcall())

    assert result.detail == "HTTP 200: Invalid login"


def test_unknown_error_code_is_a_provider_error_kept_verbatim() -> None:
    result, _ = send(gateway_error(42, 400, "Something new"), flashcall())

    assert result == SendResult(outcome=Outcome.PROVIDER_ERROR, error_code="42", breaker_failure=True)


@pytest.mark.parametrize(
    "error",
    [{"code": "8"}, {"code": None}, {"code": True}, {"code": 8.0}, {"description": "x"}, "8", 8, []],
    ids=["string", "null", "bool", "float", "missing", "error-string", "error-number", "error-list"],
)
def test_error_without_an_integer_code_is_named_by_its_http_status(error: Any) -> None:
    result, _ = send(answer({"error": error}, 406), flashcall())

    assert result == SendResult(outcome=Outcome.PROVIDER_ERROR, error_code="http_406", breaker_failure=True)


def test_http_200_error_without_an_integer_code_is_an_unexpected_answer() -> None:
    result, _ = send(answer({"error": {"code": "4"}}), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True
    )


# --- malformed answers and transport faults -------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_bare_error_status_without_the_documented_body_is_a_provider_error_named_by_status(
    status: int,
) -> None:
    result, _ = send(raw_answer(b"<html><body>Bad Gateway</body></html>", status), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code=f"http_{status}", breaker_failure=True
    )


@pytest.mark.parametrize("status", [201, 202, 400, 404, 503])
def test_status_other_than_200_with_a_json_body_without_error_is_named_by_status(status: int) -> None:
    result, _ = send(answer({"messageId": "1"}, status), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code=f"http_{status}", breaker_failure=True
    )


@pytest.mark.parametrize("content", [b"<html>OK</html>", b"", b'{"messageId": "1"'])
def test_http_200_with_a_body_that_is_not_json_is_a_provider_error(content: bytes) -> None:
    result, _ = send(raw_answer(content, 200), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="invalid_json", breaker_failure=True
    )


@pytest.mark.parametrize(
    "content", [b"[1, 2, 3]", b'"ok"', b"1", b"null"], ids=["list", "string", "number", "null"]
)
def test_http_200_with_json_that_is_not_an_object_is_an_unexpected_answer(content: bytes) -> None:
    result, _ = send(raw_answer(content, 200), flashcall())

    assert result == SendResult(
        outcome=Outcome.PROVIDER_ERROR, error_code="unexpected_answer", breaker_failure=True
    )


def test_error_status_with_json_that_is_not_an_object_is_named_by_status() -> None:
    result, _ = send(answer([1, 2, 3], 400), flashcall())

    assert result == SendResult(outcome=Outcome.PROVIDER_ERROR, error_code="http_400", breaker_failure=True)


@pytest.mark.parametrize(
    ("kind", "outcome", "error_code", "uncertain"),
    [
        (httpx.ReadTimeout, Outcome.TIMEOUT, "timeout", True),
        (httpx.ConnectError, Outcome.PROVIDER_ERROR, "connect_error", False),
        (httpx.ReadError, Outcome.PROVIDER_ERROR, "read_error", True),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_transport_fault_is_classified_as_a_breaker_failure_without_raising(
    kind: type[httpx.TransportError], outcome: Outcome, error_code: str, uncertain: bool
) -> None:
    result, _ = send(raising(kind), flashcall())

    assert result == SendResult(
        outcome=outcome, error_code=error_code, breaker_failure=True, uncertain=uncertain
    )


def test_gateway_hanging_past_its_timeout_is_a_timeout() -> None:
    result, _ = send(hanging, flashcall(), timeout=0.2)

    assert result == SendResult(
        outcome=Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True
    )
