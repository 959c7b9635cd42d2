"""The gateway adapter against the sandbox's imitation (the session's sandbox subprocess):
the request the sandbox received, checked field by field against the document's example
request (../shared/providers/flashingcall-rest-gateway.txt), and what the adapter makes of
its answers, accepted or refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from flashcall_dev.sandbox.gateway import LOGIN, PASSWORD, VOICECODE_LOGIN
from flashcall_dev.stack import LocalStack
from tests.support import Sandbox
from worker.core.verification import Channel, Outcome
from worker.providers.base import DocumentedError, SendRequest, SendResult
from worker.providers.gateway import Gateway

pytestmark = pytest.mark.integration

PROVIDER = "gateway"
TIMEOUT = 2.0

Send = Callable[..., SendResult]


def adapter(
    stack: LocalStack, *, login: str = LOGIN, password: str = PASSWORD, options: dict[str, str] | None = None
) -> Gateway:
    return Gateway.from_config(
        "gateway-under-test",
        base_url=stack.provider_urls[PROVIDER],
        timeout=TIMEOUT,
        credentials={"login": login, "password": password},
        options=options or {},
    )


@pytest.fixture
def send(stack: LocalStack, phone: str) -> Send:
    """Send one request for the test's phone through a fresh adapter built with `adapter_args`."""

    def once(code: str = "1234", channel: Channel = Channel.FLASHCALL, **adapter_args: Any) -> SendResult:
        provider = adapter(stack, **adapter_args)
        request = SendRequest(channel=channel, phone=phone, code_length=len(code), code=code)

        async def run() -> SendResult:
            try:
                return await provider.send(request)
            finally:
                await provider.aclose()

        return asyncio.run(run())

    return once


def recorded(sandbox: Sandbox, phone: str) -> dict[str, Any]:
    """The one request the sandbox received for the phone."""
    [record] = sandbox.records(phone, provider=PROVIDER)
    return record


# The request, field by field against the document's example


def test_request_has_exactly_the_documents_top_level_fields(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    assert list(recorded(sandbox, phone)["body"]) == ["login", "password", "destAddr", "message"]


def test_login_and_password_are_the_accounts_strings(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    body = recorded(sandbox, phone)["body"]
    assert (body["login"], body["password"]) == (LOGIN, PASSWORD)


def test_dest_addr_is_the_phone_as_7_and_ten_digits(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    dest_addr = recorded(sandbox, phone)["body"]["destAddr"]
    assert dest_addr == phone
    assert re.fullmatch(r"7[0-9]{10}", dest_addr)


def test_message_has_exactly_type_and_data(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    assert list(recorded(sandbox, phone)["body"]["message"]) == ["type", "data"]


def test_message_type_is_flashingcall(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    assert recorded(sandbox, phone)["body"]["message"]["type"] == "FLASHINGCALL"


def test_message_data_has_exactly_text_and_ttl(send: Send, sandbox: Sandbox, phone: str) -> None:
    send()

    assert list(recorded(sandbox, phone)["body"]["message"]["data"]) == ["text", "ttl"]


@pytest.mark.parametrize("code", ["4821", "482193"])
def test_text_is_the_code_as_a_string(send: Send, sandbox: Sandbox, phone: str, code: str) -> None:
    send(code)

    assert recorded(sandbox, phone)["body"]["message"]["data"]["text"] == code


def test_ttl_is_an_integer_of_minutes(send: Send, sandbox: Sandbox, phone: str) -> None:
    send(options={"ttl": "5"})

    ttl = recorded(sandbox, phone)["body"]["message"]["data"]["ttl"]
    assert (type(ttl), ttl) == (int, 5)


def test_request_goes_to_the_gateways_one_path_without_credential_headers(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    send()

    record = recorded(sandbox, phone)
    assert (record["path"], record["headers"]) == ("/", {})


# Success


def test_flash_call_is_delivered_with_the_sandboxs_message_id_as_ref(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    result = send()

    assert result == SendResult(outcome=Outcome.DELIVERED, ref=recorded(sandbox, phone)["id"])
    assert result.ref is not None


@pytest.mark.parametrize("code", ["4821", "482193"])
def test_flash_call_rings_the_user_from_a_number_ending_in_the_code(
    send: Send, sandbox: Sandbox, phone: str, code: str
) -> None:
    send(code)

    [message] = sandbox.inbox(phone)
    assert (message["channel"], message["code"]) == ("flashcall", code)
    assert message["from"].endswith(code)


def test_voicecode_variant_delivers_a_call_speaking_the_code(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    result = send("4821", Channel.VOICE, login=VOICECODE_LOGIN, options={"variant": "voicecode"})

    assert result.outcome is Outcome.DELIVERED
    assert [(m["channel"], m["code"]) for m in sandbox.inbox(phone)] == [("voice", "4821")]


def test_message_id_field_naming_an_absent_member_still_delivers_without_a_ref(send: Send) -> None:
    result = send(options={"message_id_field": "id"})

    assert result == SendResult(outcome=Outcome.DELIVERED, ref=None)


# Errors


@pytest.mark.parametrize("error", Gateway.errors, ids=lambda error: error.code)
def test_scripted_error_is_answered_at_its_documented_status_and_classified_as_listed(
    send: Send, sandbox: Sandbox, phone: str, error: DocumentedError
) -> None:
    sandbox.script(phone, {"error_code": error.code}, provider=PROVIDER)

    result = send()

    assert recorded(sandbox, phone)["http_status"] == error.http_status
    assert (result.outcome, result.breaker_failure, result.error_code) == (
        error.classification.outcome,
        error.classification.breaker_failure,
        error.code,
    )


def test_wrong_password_is_a_provider_error_counting_against_the_breaker(send: Send) -> None:
    result = send(password="not-the-password")

    assert (result.outcome, result.error_code, result.breaker_failure) == (Outcome.PROVIDER_ERROR, "6", True)


def test_resending_the_same_code_is_refused_as_a_duplicate_without_a_breaker_failure(send: Send) -> None:
    send("4821")

    result = send("4821")

    assert (result.outcome, result.error_code, result.breaker_failure) == (Outcome.REFUSED, "10", False)


def test_six_digit_code_on_a_voicecode_account_is_an_invalid_request_counting_against_the_breaker(
    send: Send,
) -> None:
    result = send("482193", login=VOICECODE_LOGIN)

    assert (result.outcome, result.error_code, result.breaker_failure) == (Outcome.PROVIDER_ERROR, "4", True)


def test_undelivered_call_is_still_delivered_as_far_as_the_gateway_answers(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    sandbox.script(phone, {"deliver": False}, provider=PROVIDER)

    result = send()

    assert result.outcome is Outcome.DELIVERED
    assert sandbox.inbox(phone) == []
