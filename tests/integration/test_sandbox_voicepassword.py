"""The sandbox's VoicePassword imitation and control API, over real HTTP on localhost."""

from __future__ import annotations

import asyncio
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web

from flashcall_dev.sandbox import RunningSandbox, start

pytestmark = pytest.mark.integration

API_KEY = "sandbox-voicepassword-key"
SEND = "/api/voice-password/send/"
GET = "/api/voice-password/get/"
NUMBER = "79991234567"
OTHER_NUMBER = "79997654321"
ANI = "74951111111"
WAIT_S = 3.0


@dataclass(frozen=True)
class Sandbox:
    url: str
    provider_url: str
    callback_url: str
    refusing_callback_url: str
    callbacks: queue.Queue[dict[str, Any]]


async def _start(callbacks: queue.Queue[dict[str, Any]]) -> tuple[RunningSandbox, web.AppRunner, str]:
    async def receive(request: web.Request) -> web.Response:
        callbacks.put(await request.json())
        return web.Response(text="OK")

    receiver = web.Application()
    receiver.router.add_post("/callback/", receive)
    runner = web.AppRunner(receiver, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return await start(), runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _stop(running: RunningSandbox, receiver: web.AppRunner) -> None:
    await running.stop()
    await receiver.cleanup()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    callbacks: queue.Queue[dict[str, Any]] = queue.Queue()
    running, receiver, receiver_url = asyncio.run_coroutine_threadsafe(_start(callbacks), loop).result()
    try:
        yield Sandbox(
            url=running.control_url,
            provider_url=running.provider_urls["voicepassword"],
            callback_url=f"{receiver_url}/callback/",
            refusing_callback_url=f"{receiver_url}/missing/",
            callbacks=callbacks,
        )
    finally:
        asyncio.run_coroutine_threadsafe(_stop(running, receiver), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class _ToProvider(httpx.HTTPTransport):
    """Sends the provider's paths to the provider's port and the rest to the control API."""

    def __init__(self, provider_url: str) -> None:
        super().__init__()
        self._provider = httpx.URL(provider_url)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            request.url = request.url.copy_with(host=self._provider.host, port=self._provider.port)
        return super().handle_request(request)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.url, timeout=WAIT_S, transport=_ToProvider(sandbox.provider_url)
    ) as client:
        client.post("/_sandbox/reset").raise_for_status()
        while not sandbox.callbacks.empty():
            sandbox.callbacks.get_nowait()
        yield client


def send(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(SEND, json=body, headers={"Authorization": API_KEY})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def get(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(GET, json={"security": {"apiKey": API_KEY}, **body})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def script(client: httpx.Client, *steps: dict[str, Any], number: str | None = NUMBER) -> None:
    body: dict[str, Any] = {"provider": "voicepassword", "steps": list(steps)}
    if number is not None:
        body["number"] = number
    client.post("/_sandbox/script", json=body).raise_for_status()


def inbox(client: httpx.Client, number: str = NUMBER) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = client.get(f"/_sandbox/inbox/{number}").json()["messages"]
    return messages


def records(client: httpx.Client, **query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/_sandbox/records", params=query).json()["records"]
    return found


def balance(client: httpx.Client) -> Decimal:
    return Decimal(get(client, {"request": "balance"})["balance"])


def error(code: str) -> dict[str, str]:
    return {"result": "error", "error_code": code}


def eventually(check: Callable[[], bool]) -> None:
    """For the few outcomes the sandbox reaches after answering (callback results)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# Authorisation


def test_api_key_in_authorization_header_is_accepted(client: httpx.Client) -> None:
    response = client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY})

    assert response.json()["result"] == "ok"


def test_api_key_in_security_section_is_accepted(client: httpx.Client) -> None:
    response = client.post(SEND, json={"security": {"apiKey": API_KEY}, "number": NUMBER})

    assert response.json()["result"] == "ok"


@pytest.mark.parametrize(
    ("headers", "security"),
    [({"Authorization": "wrong-key"}, None), ({}, {"apiKey": "wrong-key"}), ({}, None)],
    ids=["wrong-header", "wrong-security", "missing"],
)
def test_send_without_the_right_key_is_authorisation_failed(
    client: httpx.Client, headers: dict[str, str], security: dict[str, str] | None
) -> None:
    body: dict[str, Any] = {"number": NUMBER}
    if security is not None:
        body["security"] = security

    response = client.post(SEND, json=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == error("authorisation_failed")


def test_get_without_the_right_key_is_authorisation_failed(client: httpx.Client) -> None:
    response = client.post(GET, json={"security": {"apiKey": "wrong-key"}, "request": "balance"})

    assert response.json() == error("authorisation_failed")


# Send: errors


@pytest.mark.parametrize("number", [None, "", "7999abc4567", "+79991234567"])
def test_missing_or_non_digit_number_is_number_is_empty(client: httpx.Client, number: str | None) -> None:
    body = {} if number is None else {"number": number}

    assert send(client, body) == error("number_is_empty")


@pytest.mark.parametrize("number", ["89991234567", "7999123456", "799912345678"])
def test_number_not_seven_and_ten_digits_is_number_not_valid(client: httpx.Client, number: str) -> None:
    assert send(client, {"number": number}) == error("number_not_valid")


@pytest.mark.parametrize("capacity", ["3", "7", "", "four"])
def test_capacity_outside_four_to_six_is_code_not_valid(client: httpx.Client, capacity: str) -> None:
    assert send(client, {"number": NUMBER, "capacity": capacity}) == error("code_not_valid")


@pytest.mark.parametrize("flashcall", [{}, {"code": "123"}, {"code": "12345"}, {"code": "12a4"}])
def test_flash_call_client_code_not_four_digits_is_code_not_valid(
    client: httpx.Client, flashcall: dict[str, str]
) -> None:
    assert send(client, {"number": NUMBER, "flashcall": flashcall}) == error("code_not_valid")


@pytest.mark.parametrize("code", ["123", "12345", ""])
def test_voice_code_not_four_digits_is_code_not_valid(client: httpx.Client, code: str) -> None:
    assert send(client, {"number": NUMBER, "voice": {"code": code}}) == error("code_not_valid")


def test_voice_with_more_than_four_digit_capacity_is_code_not_valid(client: httpx.Client) -> None:
    assert send(client, {"number": NUMBER, "capacity": "6", "voice": {}}) == error("code_not_valid")


def test_voice_from_unregistered_ani_is_ani_phone_not_valid(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "voice": {"code": "1234", "ani": "74959999999"}})

    assert answer == error("ani_phone_not_valid")


def test_request_costing_more_than_the_balance_is_not_enough_money(client: httpx.Client) -> None:
    client.post("/_sandbox/balance", json={"provider": "voicepassword", "balance": "0.34"}).raise_for_status()

    assert send(client, {"number": NUMBER}) == error("not_enough_money")
    assert inbox(client) == []
    assert balance(client) == Decimal("0.34")


@pytest.mark.parametrize("content", [b"number=79991234567", b"[]", b'"79991234567"'])
def test_body_that_is_not_a_json_object_is_unknown_request(client: httpx.Client, content: bytes) -> None:
    response = client.post(SEND, content=content, headers={"Authorization": API_KEY})

    assert response.json() == error("unknown_request")


@pytest.mark.parametrize(
    "body",
    [
        {"number": 79991234567},
        {"number": NUMBER, "capacity": 4},
        {"number": NUMBER, "flashcall": {"code": 1234}},
        {"number": NUMBER, "voice": {"code": 1234}},
        {"number": NUMBER, "voice": {"code": "1234", "repeat": 1}},
        {"number": NUMBER, "voice": {"ani": 74951111111}},
        {"sms": {"id": 100000}},
    ],
    ids=["number", "capacity", "flashcall.code", "voice.code", "voice.repeat", "voice.ani", "sms.id"],
)
def test_numeric_option_sent_as_json_number_is_unknown_request(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    assert send(client, body) == error("unknown_request")


def test_flash_call_and_voice_in_one_request_is_unknown_request(client: httpx.Client) -> None:
    body = {"number": NUMBER, "flashcall": {"code": "1234"}, "voice": {"code": "1234"}}

    assert send(client, body) == error("unknown_request")


def test_sms_for_an_unknown_call_id_is_unknown_request(client: httpx.Client) -> None:
    assert send(client, {"sms": {"id": "1"}}) == error("unknown_request")


def test_refused_request_is_not_charged(client: httpx.Client) -> None:
    send(client, {"number": "89991234567"})

    assert balance(client) == Decimal("1000.00")


# Send: success


@pytest.mark.parametrize(("capacity", "digits"), [(None, 4), ("4", 4), ("5", 5), ("6", 6)])
def test_flash_call_with_service_code_answers_a_code_of_the_requested_capacity(
    client: httpx.Client, capacity: str | None, digits: int
) -> None:
    body = {"number": NUMBER} if capacity is None else {"number": NUMBER, "capacity": capacity}

    answer = send(client, body)

    assert answer == {
        "result": "ok",
        "id": answer["id"],
        "number": NUMBER,
        "price": "0.35",
        "code": answer["code"],
    }
    assert isinstance(answer["id"], str)
    assert re.fullmatch(rf"[0-9]{{{digits}}}", answer["code"])


def test_flash_call_with_client_code_rings_from_a_number_ending_in_it(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "flashcall": {"code": "4821"}})

    assert answer["code"] == "4821"
    [message] = inbox(client)
    assert message["provider"] == "voicepassword"
    assert message["channel"] == "flashcall"
    assert message["code"] == "4821"
    assert re.fullmatch(r"7495[0-9]{3}4821", message["from"])


def test_flash_call_with_service_code_rings_from_a_number_ending_in_it(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "capacity": "6"})

    [message] = inbox(client)
    assert message["code"] == answer["code"]
    assert len(message["from"]) == 11
    assert message["from"].endswith(answer["code"])


def test_voice_call_with_code_speaks_it(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "voice": {"code": "5678", "repeat": "1"}})

    assert answer == {"result": "ok", "id": answer["id"], "number": NUMBER, "price": "0.35", "code": "5678"}
    [message] = inbox(client)
    assert (message["channel"], message["code"]) == ("voice", "5678")


def test_voice_call_without_code_speaks_the_last_four_digits_of_the_caller(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "voice": {"ani": ANI}})

    assert answer["code"] == ANI[-4:]
    [message] = inbox(client)
    assert (message["from"], message["code"]) == (ANI, ANI[-4:])


def test_voice_caller_field_named_api_is_taken_as_ani(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER, "voice": {"api": ANI}})

    assert answer["code"] == ANI[-4:]


def test_sms_follow_up_sends_the_code_of_the_earlier_call(client: httpx.Client) -> None:
    call = send(client, {"number": NUMBER, "voice": {"code": "2468"}})

    answer = send(client, {"sms": {"id": call["id"]}})

    assert answer == {
        "result": "ok",
        "id": answer["id"],
        "number": NUMBER,
        "price": "3.30",
        "message": "Ваш код: 2468",
    }
    assert answer["id"] != call["id"]
    sms = inbox(client)[-1]
    assert (sms["channel"], sms["code"], sms["text"]) == ("sms", "2468", "Ваш код: 2468")


def test_each_accepted_request_deducts_its_price(client: httpx.Client) -> None:
    call = send(client, {"number": NUMBER})
    send(client, {"number": NUMBER, "voice": {}})
    send(client, {"sms": {"id": call["id"]}})

    assert balance(client) == Decimal("1000.00") - Decimal("0.35") - Decimal("0.35") - Decimal("3.30")


# Callbacks


def test_callback_url_receives_the_documented_call_status(client: httpx.Client, sandbox: Sandbox) -> None:
    answer = send(client, {"number": NUMBER, "voice": {"code": "1234"}, "callback_url": sandbox.callback_url})

    callback = sandbox.callbacks.get(timeout=WAIT_S)

    assert callback == {
        "id": answer["id"],
        "number": NUMBER,
        "duration": callback["duration"],
        "state": "ANSWERED",
        "price": "0.35",
        "date": callback["date"],
    }
    assert callback["duration"].isdigit()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", callback["date"])


def test_missed_flash_call_is_reported_as_no_answer(client: httpx.Client, sandbox: Sandbox) -> None:
    send(client, {"number": NUMBER, "callback_url": sandbox.callback_url})

    callback = sandbox.callbacks.get(timeout=WAIT_S)

    assert (callback["state"], callback["duration"]) == ("NO ANSWER", "0")


def test_sms_callback_reports_delivered(client: httpx.Client, sandbox: Sandbox) -> None:
    script(client, {"callback_delay_ms": 0}, {"callback_delay_ms": 0})
    call = send(client, {"number": NUMBER})
    sms = send(client, {"sms": {"id": call["id"]}, "callback_url": sandbox.callback_url})

    callback = sandbox.callbacks.get(timeout=WAIT_S)

    assert (callback["id"], callback["state"], callback["price"]) == (sms["id"], "DELIVERED", "3.30")


def test_callback_receiver_answer_is_recorded(client: httpx.Client, sandbox: Sandbox) -> None:
    script(client, {"callback_delay_ms": 0})
    send(client, {"number": NUMBER, "callback_url": sandbox.refusing_callback_url})

    eventually(lambda: records(client, number=NUMBER)[0]["callback_status"] != "pending")

    assert records(client, number=NUMBER)[0]["callback_status"] == "404"


def test_unreachable_callback_url_is_recorded_as_failed(client: httpx.Client) -> None:
    script(client, {"callback_delay_ms": 0})
    send(client, {"number": NUMBER, "callback_url": "http://127.0.0.1:9/callback/"})

    eventually(lambda: records(client, number=NUMBER)[0]["callback_status"] != "pending")

    assert records(client, number=NUMBER)[0]["callback_status"] == "failed"


# Statistics


def test_get_balance_answers_balance_and_currency(client: httpx.Client) -> None:
    send(client, {"number": NUMBER})

    assert get(client, {"request": "balance"}) == {"result": "ok", "balance": "999.65", "currency": "Rub"}


def test_get_state_is_dozvon_until_the_call_settles_then_its_russian_state(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    script(client, {"callback_delay_ms": 200})
    call = send(client, {"number": NUMBER, "callback_url": sandbox.callback_url})

    ringing = get(client, {"request": "state", "id": call["id"]})
    sandbox.callbacks.get(timeout=WAIT_S)
    settled = get(client, {"request": "state", "id": call["id"]})

    assert ringing["data"]["state"] == "Дозвон"
    assert settled == {
        "result": "ok",
        "data": {
            "id": call["id"],
            "number": NUMBER,
            "date": settled["data"]["date"],
            "duration": "00:00",
            "price": "0.35",
            "service": "Flash Call",
            "state": "Нет ответа",
        },
    }
    assert re.fullmatch(r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}", settled["data"]["date"])


@pytest.mark.parametrize(
    ("state", "russian"),
    [
        ("ANSWERED", "Успешно"),
        ("BUSY", "Занято"),
        ("NO ANSWER", "Нет ответа"),
        ("FAIL", "Ошибка"),
        ("CANCEL", "Отменен"),
    ],
)
def test_get_state_names_the_final_state_in_russian(client: httpx.Client, state: str, russian: str) -> None:
    script(client, {"state": state, "callback_delay_ms": 0})
    call = send(client, {"number": NUMBER, "voice": {}})

    data = get(client, {"request": "state", "id": call["id"]})["data"]

    assert (data["state"], data["service"]) == (russian, "Voice Password")


def test_get_state_of_answered_voice_call_has_its_duration(client: httpx.Client) -> None:
    script(client, {"callback_delay_ms": 0})
    call = send(client, {"number": NUMBER, "voice": {}})

    assert get(client, {"request": "state", "id": call["id"]})["data"]["duration"] == "00:04"


def test_get_state_of_an_unknown_id_is_id_not_found(client: httpx.Client) -> None:
    assert get(client, {"request": "state", "id": "1"}) == error("ID_Not_Found")


def test_get_daily_without_date_is_date_is_empty(client: httpx.Client) -> None:
    assert get(client, {"request": "daily"}) == error("Date_is_Empty")


def test_get_daily_lists_the_calls_of_that_date(client: httpx.Client) -> None:
    first = send(client, {"number": NUMBER})
    second = send(client, {"number": OTHER_NUMBER, "voice": {}})
    send(client, {"sms": {"id": first["id"]}})
    day = get(client, {"request": "state", "id": first["id"]})["data"]["date"][:10]

    answer = get(client, {"request": "daily", "date": day})

    assert answer["rows"] == "2"
    assert [row["id"] for row in answer["data"]] == [first["id"], second["id"]]
    assert answer["data"][1]["number"] == OTHER_NUMBER


def test_get_daily_of_another_date_is_empty(client: httpx.Client) -> None:
    send(client, {"number": NUMBER})

    assert get(client, {"request": "daily", "date": "01.01.2001"}) == {
        "result": "ok",
        "rows": "0",
        "data": [],
    }


def test_get_unknown_request_is_unknown_request(client: httpx.Client) -> None:
    assert get(client, {"request": "tariffs"}) == error("unknown_request")


# Scripted behaviours


def test_scripted_latency_delays_the_answer(client: httpx.Client) -> None:
    script(client, {"latency_ms": 300})

    started = time.monotonic()
    answer = send(client, {"number": NUMBER})

    assert time.monotonic() - started >= 0.3
    assert answer["result"] == "ok"


def test_global_latency_delays_provider_answers_but_not_the_control_api(client: httpx.Client) -> None:
    client.post("/_sandbox/latency", json={"latency_ms": 300}).raise_for_status()
    try:
        started = time.monotonic()
        send(client, {"number": NUMBER})
        provider_s = time.monotonic() - started
        started = time.monotonic()
        client.get("/_sandbox/health")
        control_s = time.monotonic() - started
    finally:
        client.post("/_sandbox/latency", json={"latency_ms": 0}).raise_for_status()

    assert provider_s >= 0.3
    assert control_s < 0.3


def test_scripted_error_code_is_answered_without_placing_or_charging(client: httpx.Client) -> None:
    script(client, {"error_code": "number_in_spam_list"})

    assert send(client, {"number": NUMBER}) == error("number_in_spam_list")
    assert inbox(client) == []
    assert balance(client) == Decimal("1000.00")


def test_scripted_http_status_answers_a_broken_server_page(client: httpx.Client) -> None:
    script(client, {"http_status": 502})

    response = client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY})

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


def test_scripted_body_is_answered_raw(client: httpx.Client) -> None:
    script(client, {"body": '{"result": "ok", "id": '})

    response = client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY})

    assert (response.status_code, response.text) == (200, '{"result": "ok", "id": ')


def test_scripted_body_with_http_status_is_answered_with_that_status(client: httpx.Client) -> None:
    script(client, {"http_status": 429, "body": "Too Many Requests"})

    response = client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY})

    assert (response.status_code, response.text) == (429, "Too Many Requests")


def test_scripted_disconnect_closes_the_connection_without_an_answer(client: httpx.Client) -> None:
    script(client, {"disconnect": True})

    with pytest.raises(httpx.RemoteProtocolError):
        client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY})
    [record] = records(client, number=NUMBER)
    assert (record["fault"], record["http_status"], record["id"]) == ("disconnect", None, None)


def test_scripted_hang_never_answers(client: httpx.Client) -> None:
    script(client, {"hang": True})

    with pytest.raises(httpx.ReadTimeout):
        client.post(SEND, json={"number": NUMBER}, headers={"Authorization": API_KEY}, timeout=0.3)
    [record] = records(client, number=NUMBER)
    assert (record["fault"], record["id"]) == ("hang", None)


def test_scripted_state_is_reported_in_the_callback(client: httpx.Client, sandbox: Sandbox) -> None:
    script(client, {"state": "BUSY", "callback_delay_ms": 0})
    send(client, {"number": NUMBER, "callback_url": sandbox.callback_url})

    assert sandbox.callbacks.get(timeout=WAIT_S)["state"] == "BUSY"


@pytest.mark.parametrize("state", ["BUSY", "FAIL", "CANCEL"])
def test_flash_call_that_does_not_ring_through_stays_out_of_the_inbox(
    client: httpx.Client, state: str
) -> None:
    script(client, {"state": state})
    send(client, {"number": NUMBER})

    assert inbox(client) == []


def test_unanswered_voice_call_stays_out_of_the_inbox(client: httpx.Client) -> None:
    script(client, {"state": "NO ANSWER"})
    send(client, {"number": NUMBER, "voice": {"code": "1234"}})

    assert inbox(client) == []


def test_undelivered_sms_stays_out_of_the_inbox(client: httpx.Client) -> None:
    script(client, {"deliver": False}, {"state": "NOT DELIVERED"})
    call = send(client, {"number": NUMBER})
    send(client, {"sms": {"id": call["id"]}})

    assert inbox(client) == []


def test_scripted_deliver_false_answers_ok_and_charges_but_never_rings(client: httpx.Client) -> None:
    script(client, {"deliver": False})

    answer = send(client, {"number": NUMBER})

    assert answer["result"] == "ok"
    assert inbox(client) == []
    assert balance(client) == Decimal("999.65")


def test_script_steps_are_consumed_in_order_then_behaviour_is_normal(client: httpx.Client) -> None:
    script(client, {"error_code": "number_not_permitted"}, {"error_code": "user_disabled"})

    answers = [send(client, {"number": NUMBER}) for _ in range(3)]

    assert answers[0] == error("number_not_permitted")
    assert answers[1] == error("user_disabled")
    assert answers[2]["result"] == "ok"


def test_script_without_number_applies_to_every_number(client: httpx.Client) -> None:
    script(client, {"error_code": "user_disabled"}, {"error_code": "user_disabled"}, number=None)

    assert send(client, {"number": NUMBER}) == error("user_disabled")
    assert send(client, {"number": OTHER_NUMBER}) == error("user_disabled")


def test_number_script_takes_precedence_over_the_default_script(client: httpx.Client) -> None:
    script(client, {"error_code": "user_disabled"}, number=None)
    script(client, {"error_code": "number_in_spam_list"})

    assert send(client, {"number": NUMBER}) == error("number_in_spam_list")
    assert send(client, {"number": OTHER_NUMBER}) == error("user_disabled")


def test_new_script_for_a_number_replaces_the_old_one(client: httpx.Client) -> None:
    script(client, {"error_code": "user_disabled"})
    script(client, {"error_code": "number_in_spam_list"})

    assert send(client, {"number": NUMBER}) == error("number_in_spam_list")
    assert send(client, {"number": NUMBER})["result"] == "ok"


def test_sms_follow_up_consumes_the_script_of_the_call_number(client: httpx.Client) -> None:
    call = send(client, {"number": NUMBER})
    script(client, {"error_code": "not_enough_money"})

    assert send(client, {"sms": {"id": call["id"]}}) == error("not_enough_money")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "nope", "steps": []}, "provider"),
        ({"provider": "voicepassword", "number": 79991234567, "steps": []}, "number"),
        ({"provider": "voicepassword", "steps": {}}, "steps"),
        ({"provider": "voicepassword", "steps": [{"state": "RINGING"}]}, "steps[0].state"),
        ({"provider": "voicepassword", "steps": [{}, {"error_code": "oops"}]}, "steps[1].error_code"),
        ({"provider": "voicepassword", "steps": [{"latency_ms": -1}]}, "steps[0].latency_ms"),
        ({"provider": "voicepassword", "steps": [{"http_status": 200}]}, "steps[0].http_status"),
        ({"provider": "voicepassword", "steps": [{"deliver": "no"}]}, "steps[0].deliver"),
        ({"provider": "voicepassword", "steps": [{"latency": 5}]}, "steps[0].latency"),
        ({"provider": "voicepassword", "steps": [{"hang": True, "disconnect": True}]}, "steps[0]"),
    ],
)
def test_invalid_script_is_refused_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/_sandbox/script", json=body)

    assert response.status_code == 400
    assert response.json()["field"] == field


# Inbox, records, reset


def test_inbox_of_a_number_never_called_is_empty(client: httpx.Client) -> None:
    response = client.get(f"/_sandbox/inbox/{OTHER_NUMBER}")

    assert response.json() == {"number": OTHER_NUMBER, "messages": []}


def test_missed_flash_call_shows_in_the_inbox(client: httpx.Client) -> None:
    answer = send(client, {"number": NUMBER})

    [message] = inbox(client)
    assert message["code"] == answer["code"]
    assert message["text"] is None
    assert set(message) == {"provider", "channel", "from", "code", "text", "at"}


def test_records_hold_every_request_to_a_number_including_refused_ones(client: httpx.Client) -> None:
    script(client, {"error_code": "user_disabled"})
    send(client, {"number": NUMBER})
    call = send(client, {"number": NUMBER, "voice": {"code": "1234"}})
    send(client, {"number": OTHER_NUMBER})

    found = records(client, provider="voicepassword", number=NUMBER)

    assert [(r["kind"], r["error_code"], r["id"]) for r in found] == [
        ("flashcall", "user_disabled", None),
        ("voice", None, call["id"]),
    ]
    assert found[1] == {
        "provider": "voicepassword",
        "path": SEND,
        "kind": "voice",
        "number": NUMBER,
        "id": call["id"],
        "price": "0.35",
        "state": "ANSWERED",
        "error_code": None,
        "http_status": 200,
        "callback_status": None,
        "fault": None,
        "at": found[1]["at"],
        "body": {"number": NUMBER, "voice": {"code": "1234"}},
        "headers": {"Authorization": API_KEY},
    }


def test_records_keep_the_body_even_when_it_is_not_json(client: httpx.Client) -> None:
    client.post(SEND, content=b"number=79991234567", headers={"Authorization": API_KEY})
    assert records(client, provider="voicepassword")[-1]["body"] == "number=79991234567"


def test_records_filter_by_provider(client: httpx.Client) -> None:
    send(client, {"number": NUMBER})
    get(client, {"request": "balance"})

    assert [r["kind"] for r in records(client, provider="voicepassword")] == ["flashcall", "get"]
    assert records(client, provider="telphin") == []


def test_reset_forgets_records_scripts_inboxes_and_restores_the_balance(client: httpx.Client) -> None:
    script(client, {"error_code": "user_disabled"}, {"error_code": "user_disabled"})
    send(client, {"number": NUMBER})
    client.post("/_sandbox/balance", json={"provider": "voicepassword", "balance": "5.00"}).raise_for_status()
    send(client, {"number": OTHER_NUMBER})

    client.post("/_sandbox/reset").raise_for_status()

    assert records(client) == []
    assert inbox(client, OTHER_NUMBER) == []
    assert send(client, {"number": NUMBER})["result"] == "ok"
    assert balance(client) == Decimal("999.65")


def test_health_answers_ok(client: httpx.Client) -> None:
    assert client.get("/_sandbox/health").json() == {"ok": True}


def chance(client: httpx.Client, probability: float, behaviour: dict[str, Any]) -> httpx.Response:
    body = {
        "provider": "voicepassword",
        "number": NUMBER,
        "chance": {"probability": probability, "behaviour": behaviour},
    }
    return client.post("/_sandbox/script", json=body)


def test_a_chance_of_one_applies_its_behaviour_to_every_request(client: httpx.Client) -> None:
    chance(client, 1, {"error_code": "number_in_spam_list"}).raise_for_status()
    answers = [send(client, {"number": NUMBER})["error_code"] for _ in range(5)]
    assert answers == ["number_in_spam_list"] * 5


def test_a_chance_of_zero_never_applies(client: httpx.Client) -> None:
    chance(client, 0, {"error_code": "number_in_spam_list"}).raise_for_status()
    assert {send(client, {"number": NUMBER})["result"] for _ in range(5)} == {"ok"}


def test_a_chance_applies_after_the_scripts_steps(client: httpx.Client) -> None:
    body = {
        "provider": "voicepassword",
        "number": NUMBER,
        "steps": [{"error_code": "user_disabled"}],
        "chance": {"probability": 1, "behaviour": {"error_code": "number_in_spam_list"}},
    }
    client.post("/_sandbox/script", json=body).raise_for_status()
    answers = [send(client, {"number": NUMBER})["error_code"] for _ in range(2)]
    assert answers == ["user_disabled", "number_in_spam_list"]


@pytest.mark.parametrize("probability", [-0.1, 1.5, "0.5", True])
def test_a_chance_outside_zero_to_one_is_refused(client: httpx.Client, probability: Any) -> None:
    response = chance(client, probability, {"error_code": "number_in_spam_list"})
    assert (response.status_code, response.json()["field"]) == (400, "chance.probability")
