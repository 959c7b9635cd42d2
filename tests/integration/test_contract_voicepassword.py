"""The VoicePassword adapter against the session's sandbox over real HTTP: for every request kind
the document has (flash call with the service's or the client's code, voice, SMS follow-up,
`callback_url`, and `/get/` balance, state and daily statistics), the request the sandbox
recorded is the document's example field by field (names, string-typed numbers, `79999999999`
numbers, where the API key travels, nothing extra), and the success answer is read back.

Document: ../shared/providers/voicepassword.txt, "Примеры запросов в формате JSON" and
"Запрос статистики".
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from flashcall_dev.stack import LocalStack
from tests.integration.sandbox_access import adapter, all_strings, balance_set_to, provider_records, run
from tests.support import Sandbox
from worker.core import codes
from worker.core.verification import CallState, Channel, Outcome
from worker.providers.base import CallStatus, SendRequest, SendResult
from worker.providers.voicepassword.adapter import VoicePassword

pytestmark = pytest.mark.integration

API_KEY = "sandbox-voicepassword-key"
REGISTERED_ANI = "74950000000"
HEADER = {"Authorization": API_KEY}
SECURITY = {"api_key_in": "security"}
# Nothing listens there: the sandbox's status callback fails without touching the test.
CALLBACK_URL = "http://127.0.0.1:9/callback/"
# The sandbox dates calls in Moscow time, as the provider does.
MSK = timezone(timedelta(hours=3))

Send = Callable[..., tuple[SendResult, dict[str, Any]]]
_T = TypeVar("_T")


@pytest.fixture
def send(stack: LocalStack, sandbox: Sandbox) -> Send:
    """Send through a fresh adapter with `options`; answer the result and the request the sandbox recorded."""

    def send_one(
        request: SendRequest, options: dict[str, str] | None = None
    ) -> tuple[SendResult, dict[str, Any]]:
        result = run(adapter(stack, "voicepassword", options), lambda provider: provider.send(request))
        return result, sandbox.records(request.phone)[-1]

    return send_one


def flashcall(phone: str, code: str | None = None, code_length: int = 4, **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=phone, code_length=code_length, code=code, **extra)


def voice(phone: str, code: str | None, **extra: Any) -> SendRequest:
    return SendRequest(channel=Channel.VOICE, phone=phone, code_length=4, code=code, **extra)


# --- flash call ---------------------------------------------------------------------------


def test_flash_call_with_the_services_code_is_the_capacity_example(send: Send, phone: str) -> None:
    _, record = send(flashcall(phone, code_length=5))

    assert (record["body"], record["headers"]) == ({"number": phone, "capacity": "5"}, HEADER)


def test_flash_call_with_the_services_code_is_read_as_delivered_with_that_code(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    result, record = send(flashcall(phone, code_length=6))

    assert result == SendResult(
        outcome=Outcome.DELIVERED,
        ref=record["id"],
        code=sandbox.inbox(phone)[0]["code"],
        price=Decimal("0.35"),
    )


def test_flash_call_with_the_clients_code_is_the_flashcall_example(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    code = codes.generate(4)

    result, record = send(flashcall(phone, code=code), SECURITY)

    assert record["body"] == {"security": {"apiKey": API_KEY}, "number": phone, "flashcall": {"code": code}}
    assert record["headers"] == {}
    assert (result.outcome, result.code, sandbox.inbox(phone)[0]["code"]) == (Outcome.DELIVERED, None, code)


def test_flash_call_with_a_callback_url_is_the_callback_example(send: Send, phone: str) -> None:
    _, record = send(flashcall(phone, callback_url=CALLBACK_URL), SECURITY)

    assert record["body"] == {
        "security": {"apiKey": API_KEY},
        "number": phone,
        "capacity": "4",
        "callback_url": CALLBACK_URL,
    }


# --- voice --------------------------------------------------------------------------------


def test_voice_call_without_a_code_sends_an_empty_voice_section(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    result, record = send(voice(phone, None))

    assert (record["body"], record["headers"]) == ({"number": phone, "voice": {}}, HEADER)
    assert result.code == sandbox.inbox(phone)[0]["code"]


def test_voice_call_with_a_code_is_the_voice_example(send: Send, phone: str) -> None:
    result, record = send(voice(phone, "1234"), SECURITY)

    assert record["body"] == {"security": {"apiKey": API_KEY}, "number": phone, "voice": {"code": "1234"}}
    assert (result.outcome, result.code) == (Outcome.DELIVERED, None)


def test_voice_call_repeated_from_the_accounts_number_is_the_ani_example(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    _, record = send(voice(phone, "1234"), {**SECURITY, "repeat": "1", "ani": REGISTERED_ANI})

    assert record["body"] == {
        "security": {"apiKey": API_KEY},
        "number": phone,
        "voice": {"code": "1234", "repeat": "1", "ani": REGISTERED_ANI},
    }
    assert sandbox.inbox(phone)[0]["from"] == REGISTERED_ANI


def test_voice_call_with_a_callback_url_is_the_callback_example(send: Send, phone: str) -> None:
    _, record = send(voice(phone, "1234", callback_url=CALLBACK_URL), SECURITY)

    assert record["body"] == {
        "security": {"apiKey": API_KEY},
        "number": phone,
        "voice": {"code": "1234"},
        "callback_url": CALLBACK_URL,
    }


# --- SMS follow-up ------------------------------------------------------------------------


def test_sms_follow_up_is_the_sms_example_and_is_read_as_delivered(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    call, _ = send(voice(phone, "4321"))
    follow_up = SendRequest(channel=Channel.SMS, phone=phone, code_length=4, previous_ref=call.ref)

    result, record = send(follow_up, SECURITY)

    assert record["body"] == {"security": {"apiKey": API_KEY}, "sms": {"id": call.ref}}
    assert result == SendResult(outcome=Outcome.DELIVERED, ref=record["id"], price=Decimal("3.30"))
    assert sandbox.inbox(phone)[-1]["text"] == "Ваш код: 4321"


@pytest.mark.parametrize(
    ("request_kind", "options"),
    [("flashcall", {}), ("voice", {"repeat": "1", "ani": REGISTERED_ANI}), ("voice", SECURITY)],
)
def test_every_value_is_a_string_and_the_number_is_written_79999999999(
    send: Send, phone: str, request_kind: str, options: dict[str, str]
) -> None:
    request = flashcall(phone, code_length=5) if request_kind == "flashcall" else voice(phone, "1234")

    _, record = send(request, options)

    assert all_strings(record["body"])
    assert re.fullmatch(r"7[0-9]{10}", record["body"]["number"])
    assert record["error_code"] is None


# --- /get/ --------------------------------------------------------------------------------


def ask(
    stack: LocalStack, call: Callable[[VoicePassword], Awaitable[_T]], options: dict[str, str] | None = None
) -> _T:
    """Run one /get/ query through a fresh adapter; answer its result."""
    provider = adapter(stack, "voicepassword", options)
    assert isinstance(provider, VoicePassword)
    return run(provider, call)


def last_get(stack: LocalStack) -> dict[str, Any]:
    """The latest /get/ request the sandbox received (send requests of a worker may follow it)."""
    record = [record for record in provider_records(stack, "voicepassword") if record["kind"] == "get"][-1]
    assert (record["path"], record["error_code"]) == ("/api/voice-password/get/", None)
    return record


def test_balance_request_is_the_documents_example(stack: LocalStack) -> None:
    ask(stack, lambda provider: provider.balance(), SECURITY)

    assert last_get(stack)["body"] == {"security": {"apiKey": API_KEY}, "request": "balance"}


def test_balance_request_with_the_key_in_the_header_names_only_the_request(stack: LocalStack) -> None:
    ask(stack, lambda provider: provider.balance())

    record = last_get(stack)
    assert (record["body"], record["headers"]) == ({"request": "balance"}, HEADER)


def test_balance_is_read_as_the_accounts_decimal(stack: LocalStack) -> None:
    with balance_set_to(stack, "voicepassword", "987.65"):
        balance = ask(stack, lambda provider: provider.balance())

    assert balance == Decimal("987.65")


def test_state_request_is_the_documents_example(send: Send, stack: LocalStack, phone: str) -> None:
    _, placed = send(flashcall(phone))

    ask(stack, lambda provider: provider.call_status(placed["id"]), SECURITY)

    assert last_get(stack)["body"] == {
        "security": {"apiKey": API_KEY},
        "request": "state",
        "id": placed["id"],
    }


def test_state_of_a_settled_call_is_read_from_its_russian_name(
    send: Send, stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    sandbox.script(phone, {"state": "BUSY", "callback_delay_ms": 0})
    _, placed = send(voice(phone, "1234"))

    status = ask(stack, lambda provider: provider.call_status(placed["id"]))

    assert status == CallStatus(
        ref=placed["id"], state=CallState.BUSY, provider_state="Занято", price=Decimal("0.35")
    )


def test_state_of_a_ringing_call_is_in_progress(
    send: Send, stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    sandbox.script(phone, {"callback_delay_ms": 60_000})
    _, placed = send(flashcall(phone))

    status = ask(stack, lambda provider: provider.call_status(placed["id"]))

    assert (status.state, status.provider_state) == (CallState.IN_PROGRESS, "Дозвон")


def test_daily_request_is_the_documents_example_with_todays_date(stack: LocalStack) -> None:
    today = datetime.now(MSK).date()

    ask(stack, lambda provider: provider.daily(today), SECURITY)

    assert last_get(stack)["body"] == {
        "security": {"apiKey": API_KEY},
        "request": "daily",
        "date": today.strftime("%d.%m.%Y"),
    }


def test_daily_statistics_list_a_call_of_the_day_with_typed_fields(
    send: Send, stack: LocalStack, sandbox: Sandbox, phone: str
) -> None:
    sandbox.script(phone, {"state": "ANSWERED", "callback_delay_ms": 0})
    call, _ = send(voice(phone, "1234"))
    today = datetime.now(MSK).date()

    statistics = ask(stack, lambda provider: provider.daily(today))

    [row] = [row for row in statistics.calls if row.status.ref == call.ref]
    assert (row.number, row.status.state, row.duration, row.service) == (
        phone,
        CallState.DELIVERED,
        timedelta(seconds=4),
        "Voice Password",
    )
    assert row.placed_at.date() == today
