"""The sandbox's FlashingCall REST gateway imitation, over real HTTP on localhost.

Its requests and answers are checked against the gateway's document
(../shared/providers/flashingcall-rest-gateway.txt): the example request, the error answer
`{"error": {"code", "description"}, "extendedDescription"}` with the documented HTTP status.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flashcall_dev.sandbox import RunningSandbox, start

pytestmark = pytest.mark.integration

LOGIN = "sandbox-gateway-login"
VOICECODE_LOGIN = "sandbox-gateway-voicecode-login"
PASSWORD = "sandbox-gateway-password"
NUMBER = "79991234567"
OTHER_NUMBER = "79997654321"
FLASHCALL_CODE_MESSAGE = "FlashingCall text should contain a 4- or 6-digit code."
VOICECODE_MESSAGE = "FlashingCall text should contain a 4-digit code."

#: The document's table "Коды ошибок отправки": code -> (description, HTTP status).
DOCUMENTED_ERRORS: dict[int, tuple[str, int]] = {
    1: ("Service is unavailable", 503),
    2: ("Invalid IP-address", 403),
    3: ("Too many connections", 429),
    4: ("Invalid request", 400),
    5: ("Invalid login", 401),
    6: ("Invalid password", 401),
    7: ("serviceNumber is not defined", 400),
    8: ("destAddr is not correct", 406),
    9: ("Message type is not correct", 406),
    10: ("Prohibited sending duplicates", 409),
    11: ("Invalid TTL", 406),
    100: ("100", 500),
}


@dataclass(frozen=True)
class Urls:
    control: str
    gateway: str


@pytest.fixture(scope="module")
def urls() -> Iterator[Urls]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running: RunningSandbox = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        yield Urls(control=running.control_url, gateway=running.provider_urls["gateway"])
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture
def control(urls: Urls) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=urls.control, timeout=5) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


@pytest.fixture
def gateway(urls: Urls, control: httpx.Client) -> Iterator[httpx.Client]:
    """The gateway's endpoint, on a sandbox reset for the test (`control` resets it)."""
    with httpx.Client(base_url=urls.gateway, timeout=5) as client:
        yield client


def request_body(
    *,
    login: str = LOGIN,
    password: str = PASSWORD,
    dest_addr: Any = NUMBER,
    text: Any = "1234",
    ttl: Any = 1,
) -> dict[str, Any]:
    """The document's example request."""
    return {
        "login": login,
        "password": password,
        "destAddr": dest_addr,
        "message": {"type": "FLASHINGCALL", "data": {"text": text, "ttl": ttl}},
    }


def post(gateway: httpx.Client, body: Any) -> httpx.Response:
    return gateway.post("/", json=body)


def assert_error(response: httpx.Response, code: int, extended: str | None = None) -> None:
    """The answer is exactly the document's error example for `code`, at its HTTP status."""
    description, status = DOCUMENTED_ERRORS[code]
    body = response.json()
    assert response.status_code == status
    assert body["error"] == {"code": code, "description": description}
    assert set(body) == {"error", "extendedDescription"}
    assert isinstance(body["extendedDescription"], str)
    if extended is not None:
        assert body["extendedDescription"] == extended


def script(control: httpx.Client, *steps: dict[str, Any], number: str = NUMBER) -> None:
    control.post(
        "/_sandbox/script", json={"provider": "gateway", "number": number, "steps": list(steps)}
    ).raise_for_status()


def inbox(control: httpx.Client, number: str = NUMBER) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = control.get(f"/_sandbox/inbox/{number}").json()["messages"]
    return messages


def records(control: httpx.Client, number: str | None = None) -> list[dict[str, Any]]:
    params = {"provider": "gateway", **({"number": number} if number else {})}
    found: list[dict[str, Any]] = control.get("/_sandbox/records", params=params).json()["records"]
    return found


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    """`body` with the member at `path` removed."""
    section = body
    for key in path[:-1]:
        section = section[key]
    del section[path[-1]]
    return body


# Success


def test_accepted_message_answers_200_with_a_message_id(gateway: httpx.Client) -> None:
    response = post(gateway, request_body())

    assert response.status_code == 200
    assert set(response.json()) == {"messageId"}
    assert response.json()["messageId"].isdigit()


@pytest.mark.parametrize("code", ["1234", "123456"])
def test_flash_call_account_rings_from_a_number_ending_in_the_code(
    gateway: httpx.Client, control: httpx.Client, code: str
) -> None:
    post(gateway, request_body(text=code))

    [message] = inbox(control)
    assert (message["provider"], message["channel"], message["code"]) == ("gateway", "flashcall", code)
    assert message["from"].endswith(code)


def test_flash_call_text_may_surround_the_code_with_words(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    post(gateway, request_body(text="Your code 4821, valid 1 min"))

    assert [message["code"] for message in inbox(control)] == ["4821"]


def test_voicecode_account_delivers_a_call_speaking_the_code(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    post(gateway, request_body(login=VOICECODE_LOGIN, text="4821"))

    [message] = inbox(control)
    assert (message["channel"], message["code"]) == ("voice", "4821")


@pytest.mark.parametrize("dest_addr", ["79991234567", "+79991234567", "8-999-123-45-67", "89991234567"])
def test_every_documented_form_of_dest_addr_reaches_the_same_phone(
    gateway: httpx.Client, control: httpx.Client, dest_addr: str
) -> None:
    response = post(gateway, request_body(dest_addr=dest_addr))

    assert response.status_code == 200
    assert len(inbox(control, NUMBER)) == 1


@pytest.mark.parametrize("ttl", [0, 1, 5])
def test_ttl_from_one_to_five_or_zero_for_the_account_default_is_accepted(
    gateway: httpx.Client, ttl: int
) -> None:
    assert post(gateway, request_body(ttl=ttl)).status_code == 200


def test_absent_ttl_takes_the_account_default(gateway: httpx.Client) -> None:
    assert post(gateway, without(request_body(), "message", "data", "ttl")).status_code == 200


def test_text_of_2000_characters_is_accepted(gateway: httpx.Client) -> None:
    text = "1234 " + "x" * 1995

    assert post(gateway, request_body(text=text)).status_code == 200


# Errors: the request


@pytest.mark.parametrize(
    ("path", "extended"),
    [
        (("login",), "login is missing or is not a string."),
        (("password",), "password is missing or is not a string."),
        (("destAddr",), "destAddr is missing or is not a string."),
        (("message",), "message is missing or is not an object."),
        (("message", "type"), "message/type is missing or is not a string."),
        (("message", "data"), "message/data is missing or is not an object."),
        (("message", "data", "text"), "message/data/text is missing or is not a string."),
    ],
    ids=["login", "password", "destAddr", "message", "message/type", "message/data", "message/data/text"],
)
def test_missing_parameter_is_invalid_request(
    gateway: httpx.Client, path: tuple[str, ...], extended: str
) -> None:
    assert_error(post(gateway, without(request_body(), *path)), 4, extended)


@pytest.mark.parametrize(
    ("body", "extended"),
    [
        (request_body(dest_addr=79991234567), "destAddr is missing or is not a string."),
        (request_body(text=1234), "message/data/text is missing or is not a string."),
        (request_body(ttl="1"), "message/data/ttl is not an integer."),
        (request_body(ttl=True), "message/data/ttl is not an integer."),
        (request_body(ttl=1.5), "message/data/ttl is not an integer."),
        ({**request_body(), "message": "FLASHINGCALL"}, "message is missing or is not an object."),
        (
            {**request_body(), "message": {"type": "FLASHINGCALL", "data": ["1234", 1]}},
            "message/data is missing or is not an object.",
        ),
        ({**request_body(), "login": 42}, "login is missing or is not a string."),
    ],
    ids=[
        "destAddr-number",
        "text-number",
        "ttl-string",
        "ttl-bool",
        "ttl-float",
        "message-string",
        "data-list",
        "login-number",
    ],
)
def test_wrongly_typed_parameter_is_invalid_request(
    gateway: httpx.Client, body: dict[str, Any], extended: str
) -> None:
    assert_error(post(gateway, body), 4, extended)


@pytest.mark.parametrize(
    "body",
    [
        {**request_body(), "callback_url": "https://example.test/"},
        {**request_body(), "message": {"type": "FLASHINGCALL", "data": {"text": "1234", "ttl": 1}, "id": 1}},
        {
            **request_body(),
            "message": {"type": "FLASHINGCALL", "data": {"text": "1234", "ttl": 1, "code": "1"}},
        },
    ],
    ids=["top-level", "message", "data"],
)
def test_parameter_the_document_does_not_list_is_invalid_request(
    gateway: httpx.Client, body: dict[str, Any]
) -> None:
    assert_error(post(gateway, body), 4)


@pytest.mark.parametrize(
    "content", [b"login=x&password=y", b"[1, 2, 3]", b""], ids=["form", "array", "empty"]
)
def test_body_that_is_not_a_json_object_is_invalid_request(gateway: httpx.Client, content: bytes) -> None:
    response = gateway.post("/", content=content, headers={"Content-Type": "application/json"})

    assert_error(response, 4, "The request body should be a JSON object.")


def test_wrong_login_is_invalid_login(gateway: httpx.Client) -> None:
    assert_error(post(gateway, request_body(login="someone-else")), 5)


@pytest.mark.parametrize("login", [LOGIN, VOICECODE_LOGIN])
def test_wrong_password_is_invalid_password(gateway: httpx.Client, login: str) -> None:
    assert_error(post(gateway, request_body(login=login, password="wrong")), 6)


@pytest.mark.parametrize(
    "dest_addr",
    [
        "9991234567",
        "+89991234567",
        "7999123456",
        "799912345678",
        "7999123456a",
        "",
        "+7 999 123 45 67",
        "8--999",
    ],
)
def test_dest_addr_in_no_documented_form_is_not_correct(gateway: httpx.Client, dest_addr: str) -> None:
    assert_error(post(gateway, request_body(dest_addr=dest_addr)), 8)


@pytest.mark.parametrize("message_type", ["SMS", "flashingcall", "VOICECODE", ""])
def test_message_type_other_than_flashingcall_is_not_correct(
    gateway: httpx.Client, message_type: str
) -> None:
    body = request_body()
    body["message"]["type"] = message_type

    assert_error(post(gateway, body), 9)


@pytest.mark.parametrize("ttl", [-1, 6, 60])
def test_ttl_outside_one_to_five_minutes_is_invalid_ttl(gateway: httpx.Client, ttl: int) -> None:
    assert_error(post(gateway, request_body(ttl=ttl)), 11)


@pytest.mark.parametrize("text", ["", "hello", "12345", "123", "1234 and 5678", "1234567"])
def test_flash_call_text_without_exactly_one_4_or_6_digit_code_is_invalid_request(
    gateway: httpx.Client, text: str
) -> None:
    assert_error(post(gateway, request_body(text=text)), 4, FLASHCALL_CODE_MESSAGE)


@pytest.mark.parametrize("text", ["Code 1234", "123456", "12a4", ""])
def test_voicecode_text_other_than_4_digits_is_invalid_request_as_the_documents_example(
    gateway: httpx.Client, text: str
) -> None:
    assert_error(post(gateway, request_body(login=VOICECODE_LOGIN, text=text)), 4, VOICECODE_MESSAGE)


def test_text_over_2000_characters_is_invalid_request(gateway: httpx.Client) -> None:
    assert_error(post(gateway, request_body(text="1234 " + "x" * 1996)), 4)


def test_refused_request_places_no_call(gateway: httpx.Client, control: httpx.Client) -> None:
    post(gateway, request_body(ttl=9))

    assert inbox(control) == []


# Errors: duplicates


def test_same_message_to_the_same_number_again_is_a_prohibited_duplicate(gateway: httpx.Client) -> None:
    post(gateway, request_body(text="1234"))

    assert_error(post(gateway, request_body(text="1234")), 10)


def test_duplicate_rings_the_user_only_once(gateway: httpx.Client, control: httpx.Client) -> None:
    post(gateway, request_body(text="1234"))
    post(gateway, request_body(text="1234"))

    assert len(inbox(control)) == 1


def test_duplicate_is_recognised_in_another_form_of_the_same_number(gateway: httpx.Client) -> None:
    post(gateway, request_body(dest_addr="+79991234567"))

    assert_error(post(gateway, request_body(dest_addr="8-999-123-45-67")), 10)


def test_another_code_to_the_same_number_is_no_duplicate(gateway: httpx.Client) -> None:
    post(gateway, request_body(text="1234"))

    assert post(gateway, request_body(text="5678")).status_code == 200


def test_the_same_code_to_another_number_is_no_duplicate(gateway: httpx.Client) -> None:
    post(gateway, request_body(text="1234"))

    assert post(gateway, request_body(dest_addr=OTHER_NUMBER, text="1234")).status_code == 200


def test_a_refused_message_does_not_make_its_retry_a_duplicate(gateway: httpx.Client) -> None:
    post(gateway, request_body(password="wrong"))

    assert post(gateway, request_body()).status_code == 200


# Scripts


@pytest.mark.parametrize("code", sorted(DOCUMENTED_ERRORS))
def test_scripted_error_code_answers_the_documented_status_and_description(
    gateway: httpx.Client, control: httpx.Client, code: int
) -> None:
    script(control, {"error_code": str(code)})

    assert_error(post(gateway, request_body()), code)


def test_scripted_error_places_no_call(gateway: httpx.Client, control: httpx.Client) -> None:
    script(control, {"error_code": "1"})
    post(gateway, request_body())

    assert inbox(control) == []


def test_script_for_a_number_applies_to_any_form_of_it(gateway: httpx.Client, control: httpx.Client) -> None:
    script(control, {"error_code": "3"})

    assert_error(post(gateway, request_body(dest_addr="8-999-123-45-67")), 3)


def test_script_steps_run_out_into_normal_answers(gateway: httpx.Client, control: httpx.Client) -> None:
    script(control, {"error_code": "100"})
    post(gateway, request_body(text="1234"))

    assert post(gateway, request_body(text="1234")).status_code == 200


def test_undelivered_message_is_accepted_but_never_reaches_the_phone(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"deliver": False})

    assert post(gateway, request_body()).status_code == 200
    assert inbox(control) == []


def test_scripted_http_status_with_a_body_is_answered_as_is(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    script(control, {"http_status": 502, "body": "<html>Bad Gateway</html>"})

    response = post(gateway, request_body())

    assert (response.status_code, response.text) == (502, "<html>Bad Gateway</html>")


def test_script_asking_for_an_undocumented_error_code_is_refused(control: httpx.Client) -> None:
    response = control.post(
        "/_sandbox/script", json={"provider": "gateway", "number": NUMBER, "steps": [{"error_code": "12"}]}
    )

    assert response.status_code == 400


def test_script_asking_for_a_call_state_is_refused(control: httpx.Client) -> None:
    response = control.post(
        "/_sandbox/script", json={"provider": "gateway", "number": NUMBER, "steps": [{"state": "ANSWERED"}]}
    )

    assert response.status_code == 400


# Records


def test_accepted_request_is_recorded_with_its_body_and_message_id(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    body = request_body(dest_addr="+79991234567")
    message_id = post(gateway, body).json()["messageId"]

    [record] = records(control, NUMBER)
    assert (record["path"], record["kind"], record["number"], record["id"], record["http_status"]) == (
        "/",
        "flashcall",
        NUMBER,
        message_id,
        200,
    )
    assert record["body"] == body


def test_refused_request_is_recorded_with_its_code_and_status(
    gateway: httpx.Client, control: httpx.Client
) -> None:
    post(gateway, request_body(login=VOICECODE_LOGIN, ttl=7))

    [record] = records(control, NUMBER)
    assert (record["kind"], record["error_code"], record["http_status"], record["id"]) == (
        "voice",
        "11",
        406,
        None,
    )


def test_request_that_is_not_json_is_recorded_as_text(gateway: httpx.Client, control: httpx.Client) -> None:
    gateway.post("/", content=b"not json")

    assert [record["body"] for record in records(control)] == ["not json"]


def test_authorization_header_is_recorded(gateway: httpx.Client, control: httpx.Client) -> None:
    gateway.post("/", json=request_body(), headers={"Authorization": "Basic abc"})

    [record] = records(control, NUMBER)
    assert record["headers"] == {"Authorization": "Basic abc"}
