"""The MobilGroup adapter against the session's sandbox over real HTTP: for every request kind
the document has, the request the sandbox recorded is the document's example field by field
(names, string-typed numbers, `79999999999` numbers, where the API key travels, nothing extra),
and the success answer is read back.

Document: ../shared/providers/mobilgroup-voice-password.txt, section 5 "Примеры запросов".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from flashcall_dev.stack import LocalStack
from tests.integration.sandbox_access import adapter, all_strings, run
from tests.support import Sandbox
from worker.core import codes
from worker.core.verification import Channel, Outcome
from worker.providers.base import SendRequest, SendResult

pytestmark = pytest.mark.integration

API_KEY = "sandbox-mobilgroup-key"
REGISTERED_ANI = "74952222222"
HEADER = {"Authorization": API_KEY}


Send = Callable[..., tuple[SendResult, dict[str, Any]]]


@pytest.fixture
def send(stack: LocalStack, sandbox: Sandbox) -> Send:
    """Send through a fresh adapter with `options`; answer the result and the request the sandbox recorded."""

    def send_one(
        request: SendRequest, options: dict[str, str] | None = None
    ) -> tuple[SendResult, dict[str, Any]]:
        result = run(adapter(stack, "mobilgroup", options), lambda provider: provider.send(request))
        return result, sandbox.records(request.phone, provider="mobilgroup")[-1]

    return send_one


def flashcall(phone: str, code_length: int = 4) -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=phone, code_length=code_length)


def voice(phone: str, code: str | None) -> SendRequest:
    return SendRequest(channel=Channel.VOICE, phone=phone, code_length=4, code=code)


# --- flash call (example 1) ---------------------------------------------------------------


def test_flash_call_is_example_1_with_the_key_in_the_header(send: Send, phone: str) -> None:
    _, record = send(flashcall(phone))

    assert (record["body"], record["headers"]) == ({"number": phone, "capacity": "4"}, HEADER)


def test_flash_call_is_example_1_with_the_key_in_the_security_section(send: Send, phone: str) -> None:
    _, record = send(flashcall(phone), {"api_key_in": "security"})

    assert record["body"] == {"security": {"apiKey": API_KEY}, "number": phone, "capacity": "4"}
    assert record["headers"] == {}


def test_flash_call_of_six_digits_asks_for_capacity_6(send: Send, phone: str) -> None:
    _, record = send(flashcall(phone, code_length=6))

    assert record["body"] == {"number": phone, "capacity": "6"}


def test_flash_call_answer_is_read_as_delivered_with_the_services_code(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    result, record = send(flashcall(phone, code_length=5))

    [message] = sandbox.inbox(phone)
    assert result == SendResult(
        outcome=Outcome.DELIVERED, ref=record["id"], code=message["code"], price=Decimal("0.35")
    )
    assert len(message["code"]) == 5


def test_flash_call_with_a_callback_url_sends_none_since_the_document_has_none(
    send: Send, phone: str
) -> None:
    request = SendRequest(
        channel=Channel.FLASHCALL, phone=phone, code_length=4, callback_url="http://127.0.0.1:9/callback/"
    )

    result, record = send(request)

    assert record["body"] == {"number": phone, "capacity": "4"}
    assert result.outcome is Outcome.DELIVERED


# --- voice (examples 2 to 5) --------------------------------------------------------------


def test_voice_call_without_a_code_is_example_2(send: Send, sandbox: Sandbox, phone: str) -> None:
    result, record = send(voice(phone, code=None))

    assert (record["body"], record["headers"]) == ({"number": phone, "voice": {}}, HEADER)
    assert result.code == sandbox.inbox(phone)[0]["code"]


def test_voice_call_with_a_code_is_example_3(send: Send, sandbox: Sandbox, phone: str) -> None:
    code = codes.generate(4)

    result, record = send(voice(phone, code))

    assert record["body"] == {"number": phone, "voice": {"code": code}}
    assert (result.outcome, result.code, sandbox.inbox(phone)[0]["code"]) == (Outcome.DELIVERED, None, code)


def test_voice_call_repeating_the_code_is_example_4(send: Send, phone: str) -> None:
    _, record = send(voice(phone, "1234"), {"repeat": "1"})

    assert record["body"] == {"number": phone, "voice": {"code": "1234", "repeat": "1"}}


def test_voice_call_from_the_accounts_number_is_example_5(send: Send, sandbox: Sandbox, phone: str) -> None:
    result, record = send(voice(phone, "1234"), {"repeat": "1", "ani": REGISTERED_ANI})

    assert record["body"] == {
        "number": phone,
        "voice": {"code": "1234", "repeat": "1", "ani": REGISTERED_ANI},
    }
    assert (result.outcome, sandbox.inbox(phone)[0]["from"]) == (Outcome.DELIVERED, REGISTERED_ANI)


def test_voice_call_with_the_key_in_the_security_section_puts_it_first(send: Send, phone: str) -> None:
    _, record = send(voice(phone, "1234"), {"api_key_in": "security"})

    assert list(record["body"]) == ["security", "number", "voice"]
    assert record["headers"] == {}


# --- SMS follow-up (example 6) ------------------------------------------------------------


def test_sms_follow_up_is_example_6_and_is_read_as_delivered(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    call, _ = send(voice(phone, "4321"))
    follow_up = SendRequest(channel=Channel.SMS, phone=phone, code_length=4, previous_ref=call.ref)

    result, record = send(follow_up, {"api_key_in": "security"})

    assert record["body"] == {"security": {"apiKey": API_KEY}, "sms": {"id": call.ref}}
    assert result == SendResult(outcome=Outcome.DELIVERED, ref=record["id"], price=Decimal("3.30"))
    assert sandbox.inbox(phone)[-1]["text"] == "Ваш код: 4321"


# --- what every request has in common -----------------------------------------------------


@pytest.mark.parametrize(
    ("request_kind", "options"),
    [
        ("flashcall", {}),
        ("voice", {"repeat": "1", "ani": REGISTERED_ANI}),
        ("voice", {"api_key_in": "security"}),
    ],
)
def test_every_value_is_a_string_and_the_number_is_written_79999999999(
    send: Send, phone: str, request_kind: str, options: dict[str, str]
) -> None:
    request = flashcall(phone) if request_kind == "flashcall" else voice(phone, "1234")

    _, record = send(request, options)

    assert all_strings(record["body"])
    assert re.fullmatch(r"7[0-9]{10}", record["body"]["number"])
    assert record["error_code"] is None
