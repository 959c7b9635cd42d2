"""The Telphin adapter against the sandbox's imitation, over real HTTP: what the adapter sends is
what the document shows, and what the imitation answers is read as the adapter's tables say.

The document (../shared/providers/telphin-flashcall.txt) gives both requests as flat JSON
objects of strings: `app_id`, `app_secret`, `number` (`+79999999999`) and, for `/auth/`,
`auth_code` (`"9999"`). The sandbox records every request as received; these tests read the
records back field by field.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from flashcall_dev.sandbox.telphin import PROVIDER as SANDBOX_TELPHIN
from flashcall_dev.stack import LocalStack
from tests.support import Sandbox
from worker.core.verification import Channel, Outcome
from worker.providers.base import CodeCheck, DocumentedError, SendRequest, SendResult
from worker.providers.telphin import ERRORS, Telphin

pytestmark = pytest.mark.integration

T = TypeVar("T")
TIMEOUT = 1.0
PROVIDER = "telphin"

#: The document's parameter tables, with the value forms its examples show.
CALL_FIELDS: dict[str, re.Pattern[str]] = {
    "app_id": re.compile(r".+"),
    "app_secret": re.compile(r".+"),
    "number": re.compile(r"\+7[0-9]{10}"),
}
AUTH_FIELDS: dict[str, re.Pattern[str]] = {**CALL_FIELDS, "auth_code": re.compile(r"[0-9]{4}")}

SEND_ERRORS = [pytest.param(error, id=error.code) for error in ERRORS if error.request == "send"]


def once(stack: LocalStack, call: Callable[[Telphin], Awaitable[T]]) -> T:
    """One adapter call through a fresh adapter pointed at the sandbox."""
    provider = Telphin.from_config(
        "telphin-under-test",
        base_url=stack.provider_urls[PROVIDER],
        timeout=TIMEOUT,
        credentials=SANDBOX_TELPHIN.credentials,
        options={},
    )

    async def run() -> T:
        try:
            return await call(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def send(stack: LocalStack, phone: str) -> SendResult:
    request = SendRequest(channel=Channel.FLASHCALL, phone=phone, code_length=4)
    return once(stack, lambda provider: provider.send(request))


def check(stack: LocalStack, phone: str, code: str) -> CodeCheck:
    return once(stack, lambda provider: provider.check_code(phone, code))


def code_of(sandbox: Sandbox, phone: str) -> str:
    """The code of the phone's latest call, as the phone shows it."""
    code: str = sandbox.inbox(phone)[-1]["code"]
    return code


def wrong(code: str) -> str:
    return "0000" if code != "0000" else "1111"


def recorded(sandbox: Sandbox, phone: str, path: str) -> dict[str, Any]:
    [record] = [r for r in sandbox.records(phone, provider=PROVIDER) if r["path"] == path]
    return record


@pytest.fixture
def call_record(stack: LocalStack, sandbox: Sandbox, phone: str) -> dict[str, Any]:
    """What the sandbox received when the adapter placed a call."""
    send(stack, phone)
    return recorded(sandbox, phone, "/")


@pytest.fixture
def auth_record(stack: LocalStack, sandbox: Sandbox, phone: str) -> dict[str, Any]:
    """What the sandbox received when the adapter checked the code of that call."""
    send(stack, phone)
    check(stack, phone, code_of(sandbox, phone))
    return recorded(sandbox, phone, "/auth/")


# The requests, field by field


def test_call_request_holds_exactly_the_documented_fields(call_record: dict[str, Any]) -> None:
    assert sorted(call_record["body"]) == sorted(CALL_FIELDS)


@pytest.mark.parametrize("field", sorted(CALL_FIELDS))
def test_call_request_field_is_a_string_of_the_documented_form(
    call_record: dict[str, Any], field: str
) -> None:
    value = call_record["body"][field]

    assert isinstance(value, str)
    assert CALL_FIELDS[field].fullmatch(value)


def test_call_request_carries_the_configured_credentials_and_the_plus_seven_number(
    call_record: dict[str, Any], phone: str
) -> None:
    assert call_record["body"] == {**SANDBOX_TELPHIN.credentials, "number": "+" + phone}


def test_auth_request_holds_exactly_the_documented_fields(auth_record: dict[str, Any]) -> None:
    assert sorted(auth_record["body"]) == sorted(AUTH_FIELDS)


@pytest.mark.parametrize("field", sorted(AUTH_FIELDS))
def test_auth_request_field_is_a_string_of_the_documented_form(
    auth_record: dict[str, Any], field: str
) -> None:
    value = auth_record["body"][field]

    assert isinstance(value, str)
    assert AUTH_FIELDS[field].fullmatch(value)


def test_auth_request_carries_the_number_and_the_typed_code(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)
    check(stack, phone, "4321")

    body = recorded(sandbox, phone, "/auth/")["body"]
    assert (body["number"], body["auth_code"]) == ("+" + phone, "4321")


# The call


def test_call_is_delivered_with_the_code_left_to_telphin(stack: LocalStack, phone: str) -> None:
    assert send(stack, phone) == SendResult(outcome=Outcome.DELIVERED, provider_checks_code=True)


def test_delivered_call_rings_the_phone_from_a_number_ending_in_the_code(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)

    [message] = sandbox.inbox(phone)
    assert (message["provider"], message["from"][-4:]) == (PROVIDER, message["code"])


@pytest.mark.parametrize("documented", SEND_ERRORS)
def test_scripted_send_error_is_classified_as_the_adapters_list_says(
    stack: LocalStack, sandbox: Sandbox, phone: str, documented: DocumentedError
) -> None:
    sandbox.script(phone, {"error_code": documented.code}, provider=PROVIDER)

    assert send(stack, phone) == SendResult.failed(documented.classification, documented.code)


def test_second_call_within_two_minutes_is_refused_without_a_breaker_failure(
    stack: LocalStack, phone: str
) -> None:
    send(stack, phone)

    assert send(stack, phone) == SendResult(
        outcome=Outcome.REFUSED, error_code="one_call_for_two_minutes", breaker_failure=False
    )


def test_number_telphin_cannot_call_is_a_bad_number(stack: LocalStack) -> None:
    result = send(stack, "7999123456")

    assert (result.outcome, result.error_code, result.breaker_failure) == (
        Outcome.BAD_NUMBER,
        "direction_error",
        False,
    )


# The check


def test_check_with_the_code_the_phone_showed_matches(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)

    assert check(stack, phone, code_of(sandbox, phone)) == CodeCheck(matched=True)


def test_check_with_a_wrong_code_is_a_mismatch_not_a_fault(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)

    assert check(stack, phone, wrong(code_of(sandbox, phone))) == CodeCheck(
        matched=False, error_code="invalid_code", breaker_failure=False
    )


def test_check_after_three_wrong_codes_is_attempts_ended_even_for_the_right_code(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)
    code = code_of(sandbox, phone)
    for _ in range(3):
        check(stack, phone, wrong(code))

    assert check(stack, phone, code) == CodeCheck(
        matched=False, error_code="auth_attempts_ended", breaker_failure=False
    )


def test_check_for_a_phone_never_called_is_a_mismatch_not_a_fault(stack: LocalStack, phone: str) -> None:
    assert check(stack, phone, "1234") == CodeCheck(
        matched=False, error_code="auth_code_does_not_exist", breaker_failure=False
    )


def test_scripted_service_is_not_connected_on_a_check_is_a_provider_fault(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)
    sandbox.script(phone, {"error_code": "service_is_not_connected"}, provider=PROVIDER)

    assert check(stack, phone, code_of(sandbox, phone)) == CodeCheck(
        matched=False, error_code="service_is_not_connected", breaker_failure=True
    )


def test_check_that_gets_no_answer_in_time_is_a_provider_fault(
    stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    send(stack, phone)
    sandbox.script(phone, {"hang": True}, provider=PROVIDER)

    assert check(stack, phone, code_of(sandbox, phone)) == CodeCheck(
        matched=False, error_code="timeout", breaker_failure=True
    )
