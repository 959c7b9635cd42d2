"""The sandbox's MobilGroup imitation over real HTTP: the session's sandbox subprocess, spoken to
as a client of the document (shared/providers/mobilgroup-voice-password.txt) would.

Each test uses numbers of its own, so the shared sandbox needs no reset between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from flashcall_dev.stack import LocalStack
from tests.integration.sandbox_access import balance_set_to
from tests.support import Sandbox

pytestmark = pytest.mark.integration

API_KEY = "sandbox-mobilgroup-key"
SEND = "/api/voice-password/send/"
REGISTERED_ANI = "74952222222"

Send = Callable[..., dict[str, Any]]


@pytest.fixture
def client(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.provider_urls["mobilgroup"], timeout=5) as client:
        yield client


@pytest.fixture
def send(client: httpx.Client) -> Send:
    """POST a body to the send handler (the key in the header unless `headers` says otherwise)."""

    def post(body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = client.post(
            SEND, json=body, headers={"Authorization": API_KEY} if headers is None else headers
        )
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    return post


def error(code: str) -> dict[str, str]:
    return {"result": "error", "error_code": code}


# --- flash call ---------------------------------------------------------------------------


def test_flash_call_answers_ok_with_id_number_price_and_the_services_code(send: Send, phone: str) -> None:
    answer = send({"number": phone, "capacity": "4"})

    assert answer == {
        "result": "ok",
        "id": answer["id"],
        "number": phone,
        "price": "0.35",
        "code": answer["code"],
    }
    assert answer["id"].isdigit()
    assert len(answer["code"]) == 4


def test_flash_call_rings_from_a_number_ending_in_the_code(send: Send, sandbox: Sandbox, phone: str) -> None:
    answer = send({"number": phone, "capacity": "6"})

    [message] = sandbox.inbox(phone)
    assert (message["provider"], message["channel"], message["code"]) == (
        "mobilgroup",
        "flashcall",
        answer["code"],
    )
    assert len(answer["code"]) == 6
    assert message["from"].endswith(answer["code"])


def test_flash_call_without_capacity_has_a_four_digit_code(send: Send, phone: str) -> None:
    assert len(send({"number": phone})["code"]) == 4


def test_number_and_capacity_may_come_in_the_settings_section_of_the_table(send: Send, phone: str) -> None:
    answer = send({"settings": {"number": phone, "capacity": "5"}})

    assert (answer["result"], answer["number"], len(answer["code"])) == ("ok", phone, 5)


def test_number_both_in_settings_and_at_the_top_level_is_unknown_request(send: Send, phone: str) -> None:
    assert send({"number": phone, "settings": {"capacity": "4"}}) == error("unknown_request")


@pytest.mark.parametrize("capacity", ["3", "7", "four", 4])
def test_capacity_outside_4_to_6_digit_strings_is_unknown_request(
    send: Send, phone: str, capacity: Any
) -> None:
    assert send({"number": phone, "capacity": capacity}) == error("unknown_request")


def test_flashcall_section_of_voicepassword_is_unknown_request(send: Send, phone: str) -> None:
    assert send({"number": phone, "flashcall": {"code": "1234"}}) == error("unknown_request")


def test_callback_url_is_unknown_request(send: Send, phone: str) -> None:
    assert send({"number": phone, "capacity": "4", "callback_url": "http://MyUrl.ru/callback/"}) == error(
        "unknown_request"
    )


def test_undocumented_field_is_unknown_request(send: Send, phone: str) -> None:
    assert send({"number": phone, "capacity": "4", "ttl": "60"}) == error("unknown_request")


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [{}, {"number": ""}, {"number": "+79991234567"}], ids=["missing", "empty", "plus"]
)
def test_missing_or_non_digit_number_is_number_is_empty(send: Send, body: dict[str, Any]) -> None:
    assert send(body) == error("number_is_empty")


@pytest.mark.parametrize("number", ["89991234567", "7999123456", "380501234567"])
def test_number_not_written_7_and_ten_digits_is_number_not_valid(send: Send, number: str) -> None:
    assert send({"number": number}) == error("number_not_valid")


def test_number_as_a_json_number_is_unknown_request(send: Send) -> None:
    assert send({"number": 79991234567}) == error("unknown_request")


# --- voice --------------------------------------------------------------------------------


def test_voice_call_without_a_code_speaks_the_caller_numbers_last_four_digits(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    answer = send({"number": phone, "voice": {}})

    [message] = sandbox.inbox(phone)
    assert (answer["result"], answer["price"]) == ("ok", "0.35")
    assert message["from"].endswith(answer["code"])


def test_voice_call_speaks_the_clients_code_repeated_from_a_registered_number(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    answer = send({"number": phone, "voice": {"code": "1234", "repeat": "1", "ani": REGISTERED_ANI}})

    [message] = sandbox.inbox(phone)
    assert answer["code"] == "1234"
    assert (message["channel"], message["from"], message["code"]) == ("voice", REGISTERED_ANI, "1234")


def test_voice_call_from_an_unregistered_number_is_ani_phone_not_valid(send: Send, phone: str) -> None:
    assert send({"number": phone, "voice": {"ani": "74959999999"}}) == error("ani_phone_not_valid")


def test_voicepasswords_registered_number_is_not_this_accounts(send: Send, phone: str) -> None:
    assert send({"number": phone, "voice": {"ani": "74950000000"}}) == error("ani_phone_not_valid")


def test_voice_caller_field_named_api_as_in_voicepasswords_table_is_unknown_request(
    send: Send, phone: str
) -> None:
    assert send({"number": phone, "voice": {"api": REGISTERED_ANI}}) == error("unknown_request")


@pytest.mark.parametrize(
    "voice",
    [{"code": "12"}, {"code": "12345"}, {"code": 1234}, {"repeat": "2"}],
    ids=["short-code", "long-code", "numeric-code", "repeat-2"],
)
def test_voice_options_out_of_the_document_are_unknown_request(
    send: Send, phone: str, voice: dict[str, Any]
) -> None:
    assert send({"number": phone, "voice": voice}) == error("unknown_request")


def test_voice_call_with_more_than_four_digits_of_capacity_is_unknown_request(send: Send, phone: str) -> None:
    assert send({"number": phone, "capacity": "5", "voice": {}}) == error("unknown_request")


def test_unanswered_voice_call_stays_out_of_the_inbox(send: Send, sandbox: Sandbox, phone: str) -> None:
    sandbox.script(phone, {"state": "NO ANSWER"}, provider="mobilgroup")
    send({"number": phone, "voice": {"code": "1234"}})

    assert sandbox.inbox(phone) == []


# --- SMS follow-up ------------------------------------------------------------------------


def test_sms_follow_up_sends_the_calls_code_and_answers_with_code_not_message(
    send: Send, sandbox: Sandbox, phone: str
) -> None:
    call = send({"number": phone, "voice": {"code": "4321"}})

    answer = send({"sms": {"id": call["id"]}})

    assert answer == {"result": "ok", "id": answer["id"], "number": phone, "price": "3.30", "code": "4321"}
    assert sandbox.inbox(phone)[-1] == {
        "provider": "mobilgroup",
        "channel": "sms",
        "from": "MobilGroup",
        "code": "4321",
        "text": "Ваш код: 4321",
        "at": sandbox.inbox(phone)[-1]["at"],
    }


def test_sms_follow_up_of_an_unknown_id_is_unknown_request(send: Send) -> None:
    assert send({"sms": {"id": "1"}}) == error("unknown_request")


def test_sms_follow_up_of_another_providers_call_is_unknown_request(
    send: Send, stack: LocalStack, phone: str
) -> None:
    voicepassword_call = httpx.post(
        stack.provider_urls["voicepassword"] + SEND,
        json={"number": phone},
        headers={"Authorization": "sandbox-voicepassword-key"},
        timeout=5,
    ).json()

    assert send({"sms": {"id": voicepassword_call["id"]}}) == error("unknown_request")


def test_sms_follow_up_naming_a_number_is_unknown_request(send: Send, phone: str) -> None:
    call = send({"number": phone})

    assert send({"number": phone, "sms": {"id": call["id"]}}) == error("unknown_request")


# --- the API key --------------------------------------------------------------------------


@pytest.mark.parametrize("key_name", ["apiKey", "ApiKey"])
def test_key_in_the_security_section_is_accepted_as_the_examples_and_the_table_spell_it(
    send: Send, phone: str, key_name: str
) -> None:
    answer = send({"security": {key_name: API_KEY}, "number": phone, "capacity": "4"}, headers={})

    assert answer["result"] == "ok"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({}, {}),
        ({}, {"Authorization": "sandbox-voicepassword-key"}),
        ({"security": {"apiKey": "wrong"}}, {}),
    ],
    ids=["no-key", "another-accounts-key", "wrong-key"],
)
def test_request_without_this_accounts_key_is_authorisation_failed(
    send: Send, phone: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    assert send({**body, "number": phone}, headers=headers) == error("authorisation_failed")


def test_body_that_is_not_json_is_unknown_request(client: httpx.Client) -> None:
    response = client.post(SEND, content=b"number=79991234567", headers={"Authorization": API_KEY})

    assert response.json() == error("unknown_request")


def test_get_handler_is_not_served(client: httpx.Client) -> None:
    response = client.post(
        "/api/voice-password/get/", json={"request": "balance"}, headers={"Authorization": API_KEY}
    )

    assert response.status_code == 404


# --- money, scripts, records --------------------------------------------------------------


def test_call_beyond_the_balance_is_not_enough_money(send: Send, stack: LocalStack, phone: str) -> None:
    with balance_set_to(stack, "mobilgroup", "0.30"):
        assert send({"number": phone}) == error("not_enough_money")


def test_scripted_error_code_of_the_document_is_answered(send: Send, sandbox: Sandbox, phone: str) -> None:
    sandbox.script(phone, {"error_code": "number_not_permitted"}, provider="mobilgroup")

    assert send({"number": phone}) == error("number_not_permitted")
    assert sandbox.inbox(phone) == []


@pytest.mark.parametrize("code", ["number_in_spam_list", "code_not_valid"])
def test_script_refuses_voicepasswords_own_error_codes(stack: LocalStack, phone: str, code: str) -> None:
    response = httpx.post(
        f"{stack.sandbox_url}/_sandbox/script",
        json={"provider": "mobilgroup", "number": phone, "steps": [{"error_code": code}]},
        timeout=5,
    )

    assert (response.status_code, response.json()["field"]) == (400, "steps[0].error_code")


def test_records_keep_the_body_and_the_credential_header(send: Send, sandbox: Sandbox, phone: str) -> None:
    call = send({"number": phone, "voice": {"code": "1234"}})

    [record] = sandbox.records(phone, provider="mobilgroup")

    assert record == {
        "provider": "mobilgroup",
        "path": SEND,
        "kind": "voice",
        "number": phone,
        "id": call["id"],
        "price": "0.35",
        "state": "ANSWERED",
        "error_code": None,
        "http_status": 200,
        "callback_status": None,
        "fault": None,
        "at": record["at"],
        "body": {"number": phone, "voice": {"code": "1234"}},
        "headers": {"Authorization": API_KEY},
    }


def test_records_find_a_number_sent_in_the_settings_section(send: Send, sandbox: Sandbox, phone: str) -> None:
    send({"security": {"apiKey": API_KEY}, "settings": {"number": phone}}, headers={})

    [record] = sandbox.records(phone, provider="mobilgroup")
    assert (record["kind"], record["headers"], record["error_code"]) == ("flashcall", {}, None)
