"""The sandbox's Telphin imitation and its control API settings, over real HTTP on localhost.

Limits and code lifetime are exercised through `POST /_sandbox/settings` instead of waiting:
a lifetime of 0 s expires a code at once, an interval of 0 s lifts the 2-minute limit.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flashcall_dev.sandbox import RunningSandbox, start

pytestmark = pytest.mark.integration

APP_ID = "sandbox-telphin-app-id"
APP_SECRET = "sandbox-telphin-app-secret"
CREDENTIALS = {"app_id": APP_ID, "app_secret": APP_SECRET}
NUMBER = "+79991234567"
NATIONAL = "79991234567"
OTHER_NUMBER = "+79997654321"
WAIT_S = 3.0
DEFAULTS = {"code_lifetime_s": 300.0, "call_interval_s": 120.0, "calls_per_day": 10, "auth_attempts": 3}


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sandbox = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        yield sandbox
    finally:
        asyncio.run_coroutine_threadsafe(sandbox.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture
def control(running: RunningSandbox) -> Iterator[httpx.Client]:
    """The control API, with every provider reset and Telphin's settings at their defaults."""
    with httpx.Client(base_url=running.control_url, timeout=WAIT_S) as client:
        client.post("/_sandbox/reset").raise_for_status()
        client.post("/_sandbox/settings", json={"provider": "telphin"}).raise_for_status()
        yield client


@pytest.fixture
def telphin(running: RunningSandbox, control: httpx.Client) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.provider_urls["telphin"], timeout=WAIT_S) as client:
        yield client


def call(telphin: httpx.Client, number: str = NUMBER, **fields: Any) -> dict[str, Any]:
    response = telphin.post("/", json={**CREDENTIALS, "number": number, **fields})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def auth(telphin: httpx.Client, code: str, number: str = NUMBER) -> dict[str, Any]:
    response = telphin.post("/auth/", json={**CREDENTIALS, "number": number, "auth_code": code})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def settings(control: httpx.Client, **values: Any) -> None:
    control.post("/_sandbox/settings", json={"provider": "telphin", **values}).raise_for_status()


def script(control: httpx.Client, *steps: dict[str, Any], number: str | None = NATIONAL) -> None:
    body: dict[str, Any] = {"provider": "telphin", "steps": list(steps)}
    if number is not None:
        body["number"] = number
    control.post("/_sandbox/script", json=body).raise_for_status()


def inbox(control: httpx.Client, number: str = NATIONAL) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = control.get(f"/_sandbox/inbox/{number}").json()["messages"]
    return messages


def records(control: httpx.Client, number: str = NATIONAL) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = control.get(
        "/_sandbox/records", params={"provider": "telphin", "number": number}
    ).json()["records"]
    return found


def code_of(control: httpx.Client, number: str = NATIONAL) -> str:
    """The code of the number's latest call, as the phone shows it."""
    code: str = inbox(control, number)[-1]["code"]
    return code


def wrong(code: str) -> str:
    return "0000" if code != "0000" else "1111"


def error(description: str) -> dict[str, str]:
    return {"status": "error", "description": description}


# The call: validation


def test_call_to_a_plus_seven_number_is_answered_succes_echoing_the_number(telphin: httpx.Client) -> None:
    assert call(telphin) == {"status": "succes", "number": NUMBER}


def test_call_to_an_eight_number_is_placed_to_the_same_phone(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    assert call(telphin, "89991234567") == {"status": "succes", "number": "89991234567"}
    assert len(inbox(control)) == 1


def test_errors_are_answered_with_http_200_and_json(telphin: httpx.Client) -> None:
    response = telphin.post("/", json={"number": NUMBER})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("missing", ["app_id", "app_secret", "number"])
def test_call_without_a_documented_field_is_parameters_error(telphin: httpx.Client, missing: str) -> None:
    body = {**CREDENTIALS, "number": NUMBER}
    del body[missing]

    assert telphin.post("/", json=body).json() == error("parameters_error")


@pytest.mark.parametrize(
    ("field", "value"),
    [("number", 79991234567), ("number", None), ("app_id", 123), ("app_secret", ["x"])],
    ids=["number-int", "number-null", "app_id-int", "app_secret-list"],
)
def test_call_with_a_field_that_is_not_a_string_is_parameters_error(
    telphin: httpx.Client, field: str, value: Any
) -> None:
    body = {**CREDENTIALS, "number": NUMBER, field: value}

    assert telphin.post("/", json=body).json() == error("parameters_error")


@pytest.mark.parametrize(
    "content", [b"app_id=x&number=%2B79991234567", b"[1, 2, 3]", b""], ids=["form", "list", "empty"]
)
def test_call_whose_body_is_not_a_json_object_is_parameters_error(
    telphin: httpx.Client, content: bytes
) -> None:
    response = telphin.post("/", content=content, headers={"Content-Type": "application/json"})

    assert response.json() == error("parameters_error")


@pytest.mark.parametrize(
    "credentials",
    [{"app_id": "wrong", "app_secret": APP_SECRET}, {"app_id": APP_ID, "app_secret": "wrong"}],
    ids=["app_id", "app_secret"],
)
def test_call_with_wrong_credentials_is_invalid_client(
    telphin: httpx.Client, credentials: dict[str, str]
) -> None:
    assert telphin.post("/", json={**credentials, "number": NUMBER}).json() == error("invalid_client")


def test_missing_fields_are_reported_before_wrong_credentials(telphin: httpx.Client) -> None:
    assert telphin.post("/", json={"app_id": "wrong", "app_secret": "wrong"}).json() == error(
        "parameters_error"
    )


@pytest.mark.parametrize(
    "number",
    ["79991234567", "+7999123456", "+799912345678", "+19991234567", "8999123456a", "", "+7 999 123-45-67"],
    ids=["no-plus", "short", "long", "not-russian", "letter", "empty", "spaced"],
)
def test_call_to_a_number_in_neither_form_is_direction_error(telphin: httpx.Client, number: str) -> None:
    assert call(telphin, number) == error("direction_error")


def test_fields_the_document_does_not_name_are_ignored(telphin: httpx.Client) -> None:
    assert call(telphin, callback_url="http://example.test/")["status"] == "succes"


def test_the_handler_answers_only_at_its_documented_path(telphin: httpx.Client) -> None:
    assert telphin.post("/call", json={**CREDENTIALS, "number": NUMBER}).status_code == 404


# The call: the code and the inbox


def test_call_shows_a_missed_call_whose_caller_number_ends_in_a_four_digit_code(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin)

    [message] = inbox(control)
    assert re.fullmatch(r"[0-9]{4}", message["code"])
    assert re.fullmatch(r"7495[0-9]{7}", message["from"])
    assert message["from"].endswith(message["code"])
    assert (message["provider"], message["channel"], message["text"]) == ("telphin", "flashcall", None)


def test_refused_call_never_rings(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin, "+79991234567", app_id="wrong")

    assert inbox(control) == []


# The call: Telphin's limits


def test_second_call_within_two_minutes_is_one_call_for_two_minutes(telphin: httpx.Client) -> None:
    call(telphin)

    assert call(telphin) == error("one_call_for_two_minutes")


def test_the_two_minute_limit_holds_across_the_plus_seven_and_eight_forms(telphin: httpx.Client) -> None:
    call(telphin, NUMBER)

    assert call(telphin, "89991234567") == error("one_call_for_two_minutes")


def test_the_two_minute_limit_is_per_number(telphin: httpx.Client) -> None:
    call(telphin, NUMBER)

    assert call(telphin, OTHER_NUMBER)["status"] == "succes"


def test_a_refused_call_does_not_count_against_the_limit(telphin: httpx.Client) -> None:
    call(telphin, NUMBER, app_id="wrong")

    assert call(telphin)["status"] == "succes"


def test_an_eleventh_call_in_a_day_is_ten_calls_per_day(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, call_interval_s=0)
    answers = [call(telphin)["status"] for _ in range(10)]

    assert answers == ["succes"] * 10
    assert call(telphin) == error("ten_calls_per_day")


def test_daily_limit_follows_its_setting(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, call_interval_s=0, calls_per_day=2)
    call(telphin)
    call(telphin)

    assert call(telphin) == error("ten_calls_per_day")


def test_the_two_minute_limit_is_answered_before_the_daily_one(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    settings(control, calls_per_day=1)
    call(telphin)

    assert call(telphin) == error("one_call_for_two_minutes")


# The check


def test_check_with_the_code_of_the_call_is_succes_echoing_number_and_code(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin)
    code = code_of(control)

    assert auth(telphin, code) == {"status": "succes", "number": NUMBER, "auth_code": code}


def test_check_in_the_eight_form_finds_the_code_of_a_plus_seven_call(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin, NUMBER)

    assert auth(telphin, code_of(control), number="89991234567")["status"] == "succes"


def test_check_with_a_wrong_code_is_invalid_code(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)

    assert auth(telphin, wrong(code_of(control))) == error("invalid_code")


def test_check_for_a_number_never_called_is_auth_code_does_not_exist(telphin: httpx.Client) -> None:
    assert auth(telphin, "1234") == error("auth_code_does_not_exist")


def test_check_for_a_number_in_neither_form_is_auth_code_does_not_exist(telphin: httpx.Client) -> None:
    assert auth(telphin, "1234", number="79991234567") == error("auth_code_does_not_exist")


def test_a_code_that_matched_is_spent(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    code = code_of(control)
    auth(telphin, code)

    assert auth(telphin, code) == error("auth_code_does_not_exist")


def test_three_wrong_codes_end_the_attempts_even_for_the_right_code(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin)
    code = code_of(control)
    answers = [auth(telphin, wrong(code))["description"] for _ in range(3)]

    assert answers == ["invalid_code"] * 3
    assert auth(telphin, code) == error("auth_attempts_ended")


def test_the_right_code_within_the_attempts_matches(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    code = code_of(control)
    auth(telphin, wrong(code))
    auth(telphin, wrong(code))

    assert auth(telphin, code)["status"] == "succes"


def test_attempts_follow_their_setting(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, auth_attempts=1)
    call(telphin)
    code = code_of(control)
    auth(telphin, wrong(code))

    assert auth(telphin, code) == error("auth_attempts_ended")


def test_check_after_the_code_lifetime_is_code_lifetime_expired(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    settings(control, code_lifetime_s=0)
    call(telphin)

    assert auth(telphin, code_of(control)) == error("code_lifetime_expired")


def test_a_new_call_replaces_the_code_and_its_attempts(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, call_interval_s=0, auth_attempts=1)
    call(telphin)
    first = code_of(control)
    auth(telphin, wrong(first))
    call(telphin)
    second = code_of(control)

    assert auth(telphin, second)["status"] == "succes"


@pytest.mark.parametrize("missing", ["app_id", "app_secret", "number", "auth_code"])
def test_check_without_a_documented_field_is_parameters_error(telphin: httpx.Client, missing: str) -> None:
    body = {**CREDENTIALS, "number": NUMBER, "auth_code": "1234"}
    del body[missing]

    assert telphin.post("/auth/", json=body).json() == error("parameters_error")


def test_check_with_a_numeric_code_is_parameters_error(telphin: httpx.Client) -> None:
    body = {**CREDENTIALS, "number": NUMBER, "auth_code": 1234}

    assert telphin.post("/auth/", json=body).json() == error("parameters_error")


def test_check_with_wrong_credentials_is_invalid_client(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    body = {"app_id": APP_ID, "app_secret": "wrong", "number": NUMBER, "auth_code": code_of(control)}

    assert telphin.post("/auth/", json=body).json() == error("invalid_client")


# Records


def test_records_hold_the_call_and_the_check_as_received(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin)
    code = code_of(control)
    auth(telphin, code)

    placed, checked = records(control)
    assert {key: placed[key] for key in ("path", "kind", "number", "state", "error_code", "http_status")} == {
        "path": "/",
        "kind": "flashcall",
        "number": NATIONAL,
        "state": "succes",
        "error_code": None,
        "http_status": 200,
    }
    assert placed["body"] == {**CREDENTIALS, "number": NUMBER}
    assert placed["id"] is not None
    assert (checked["path"], checked["kind"], checked["state"], checked["id"]) == (
        "/auth/",
        "auth",
        "succes",
        None,
    )
    assert checked["body"] == {**CREDENTIALS, "number": NUMBER, "auth_code": code}


def test_records_keep_refused_requests_with_their_error(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    call(telphin)

    assert [(r["error_code"], r["id"] is None) for r in records(control)] == [
        (None, False),
        ("one_call_for_two_minutes", True),
    ]


def test_records_carry_no_headers_since_credentials_are_in_the_body(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    call(telphin)

    assert records(control)[0]["headers"] == {}


def test_records_keep_a_body_that_is_not_json(telphin: httpx.Client, control: httpx.Client) -> None:
    telphin.post("/", content=b"number=+79991234567")

    [record] = control.get("/_sandbox/records", params={"provider": "telphin"}).json()["records"]
    assert (record["body"], record["number"], record["error_code"]) == (
        "number=+79991234567",
        None,
        "parameters_error",
    )


def test_reset_forgets_calls_codes_and_limits(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    code = code_of(control)

    control.post("/_sandbox/reset").raise_for_status()

    assert auth(telphin, code) == error("auth_code_does_not_exist")
    assert call(telphin)["status"] == "succes"


# Scripts


def test_scripted_error_code_is_answered_without_placing_a_call(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"error_code": "service_is_not_connected"})

    assert call(telphin) == error("service_is_not_connected")
    assert inbox(control) == []
    assert call(telphin)["status"] == "succes"


def test_a_scripted_step_applies_to_a_check_too(telphin: httpx.Client, control: httpx.Client) -> None:
    call(telphin)
    script(control, {"error_code": "service_is_not_connected"})

    assert auth(telphin, code_of(control)) == error("service_is_not_connected")


def test_a_scripted_error_on_a_check_uses_no_attempt(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, auth_attempts=1)
    call(telphin)
    script(control, {"error_code": "invalid_client"})
    auth(telphin, code_of(control))

    assert auth(telphin, code_of(control))["status"] == "succes"


def test_scripted_deliver_false_answers_succes_but_never_rings(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"deliver": False})

    assert call(telphin)["status"] == "succes"
    assert inbox(control) == []
    assert call(telphin) == error("one_call_for_two_minutes")


def test_scripted_latency_delays_the_answer(telphin: httpx.Client, control: httpx.Client) -> None:
    script(control, {"latency_ms": 300})

    started = time.monotonic()
    call(telphin)

    assert time.monotonic() - started >= 0.3


def test_scripted_http_status_answers_a_broken_server_page(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"http_status": 502})

    response = telphin.post("/", json={**CREDENTIALS, "number": NUMBER})

    assert response.status_code == 502
    assert "502 Bad Gateway" in response.text


def test_scripted_body_is_answered_raw(telphin: httpx.Client, control: httpx.Client) -> None:
    script(control, {"body": "[1, 2, 3]"})

    response = telphin.post("/", json={**CREDENTIALS, "number": NUMBER})

    assert (response.status_code, response.text) == (200, "[1, 2, 3]")


def test_scripted_disconnect_closes_the_connection_without_an_answer(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"disconnect": True})

    with pytest.raises(httpx.RemoteProtocolError):
        telphin.post("/", json={**CREDENTIALS, "number": NUMBER})
    [record] = records(control)
    assert (record["fault"], record["id"]) == ("disconnect", None)


def test_scripted_hang_never_answers(telphin: httpx.Client, control: httpx.Client) -> None:
    script(control, {"hang": True})

    with pytest.raises(httpx.ReadTimeout):
        telphin.post("/", json={**CREDENTIALS, "number": NUMBER}, timeout=0.3)
    [record] = records(control)
    assert (record["fault"], record["id"]) == ("hang", None)


def test_a_script_for_the_national_form_applies_to_the_eight_form(
    telphin: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"error_code": "direction_error"})

    assert call(telphin, "89991234567") == error("direction_error")


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"error_code": "invalid_code"}, "steps[0].error_code"),
        ({"state": "NO ANSWER"}, "steps[0].state"),
    ],
    ids=["check-only-code", "call-state"],
)
def test_a_script_naming_what_telphin_cannot_script_is_refused(
    control: httpx.Client, step: dict[str, Any], field: str
) -> None:
    response = control.post("/_sandbox/script", json={"provider": "telphin", "steps": [step]})

    assert (response.status_code, response.json()["field"]) == (400, field)


# Settings


def test_settings_answer_the_settings_in_force(control: httpx.Client) -> None:
    response = control.post("/_sandbox/settings", json={"provider": "telphin", "calls_per_day": 2})

    assert response.json() == {
        "ok": True,
        "provider": "telphin",
        "settings": {**DEFAULTS, "calls_per_day": 2},
    }


def test_settings_left_out_take_their_defaults_again(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, call_interval_s=0)
    settings(control)
    call(telphin)

    assert call(telphin) == error("one_call_for_two_minutes")


def test_reset_keeps_the_settings(telphin: httpx.Client, control: httpx.Client) -> None:
    settings(control, call_interval_s=0)
    control.post("/_sandbox/reset").raise_for_status()
    call(telphin)

    assert call(telphin)["status"] == "succes"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "voicepassword"}, "provider"),
        ({"provider": "nope"}, "provider"),
        ({}, "provider"),
        ({"provider": "telphin", "code_lifetime_s": -1}, "code_lifetime_s"),
        ({"provider": "telphin", "call_interval_s": "120"}, "call_interval_s"),
        ({"provider": "telphin", "calls_per_day": 0}, "calls_per_day"),
        ({"provider": "telphin", "auth_attempts": 1.5}, "auth_attempts"),
        ({"provider": "telphin", "auth_attempts": True}, "auth_attempts"),
        ({"provider": "telphin", "lifetime": 5}, "lifetime"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(
    control: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = control.post("/_sandbox/settings", json=body)

    assert (response.status_code, response.json()["field"]) == (400, field)


def test_settings_that_are_not_a_json_object_are_refused(control: httpx.Client) -> None:
    response = control.post("/_sandbox/settings", json=[1])

    assert (response.status_code, response.json()["field"]) == (400, "body")
