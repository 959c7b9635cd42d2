"""Log hygiene: phone numbers are masked and secrets dropped in every log line.

`mask_phones` and `redact_secrets` are structlog processors, tested here as plain functions
on event dicts. The `configure(fmt="json")` tests send lines through the whole pipeline,
from structlog and from Dramatiq's stdlib logger, and read the JSON written to stderr; a
fixture puts structlog and the root logger back as they were afterwards.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
import structlog
from dramatiq.message import Message

from worker.logs.structured import REDACTED, configure, mask_phones, redact_secrets


def masked(event_dict: dict[str, Any]) -> dict[str, Any]:
    return dict(mask_phones(None, "info", event_dict))


def redacted(event_dict: dict[str, Any]) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", event_dict))


# --- mask_phones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("+79991234567", "+7999*****67"),
        ("79991234567", "7999*****67"),
        ("89991234567", "8999*****67"),
        ("+7 (999) 123-45-67", "+7999*****67"),
        ("8 (999) 123-45-67", "8999*****67"),
        ("+7 999 123 45 67", "+7999*****67"),
        ("+7-999-123-45-67", "+7999*****67"),
    ],
)
def test_phone_is_masked_in_every_written_form(written: str, shown: str) -> None:
    assert masked({"event": written}) == {"event": shown}


def test_phone_inside_longer_text_is_masked_in_place() -> None:
    event = masked({"event": "calling 79991234567 through vp-main (attempt 2)"})

    assert event == {"event": "calling 7999*****67 through vp-main (attempt 2)"}


def test_every_phone_in_one_string_is_masked() -> None:
    event = masked({"event": "moved +79991234567 to 89997654321"})

    assert event == {"event": "moved +7999*****67 to 8999*****21"}


@pytest.mark.parametrize(
    "text",
    [
        "1795786427068",
        "at 1795786427068 ms",
        "fc-1795786427068-5",
        "7999123456789",
        "799912345",
        "order-42 cost 0.35",
        "2026-11-27T13:41:00Z",
    ],
    ids=["timestamp", "timestamp-in-text", "message-id", "13-digits-from-7", "9-digits", "cost", "iso-date"],
)
def test_numbers_that_are_not_phones_are_left_alone(text: str) -> None:
    assert masked({"event": text}) == {"event": text}


def test_phone_written_as_an_integer_is_masked_and_other_integers_are_left_alone() -> None:
    event = masked({"phone": 79991234567, "other": 89997654321, "attempt": 2, "at": 1795786427068})

    assert event == {"phone": "7999*****67", "other": "8999*****21", "attempt": 2, "at": 1795786427068}


def test_phones_are_masked_at_any_depth() -> None:
    event = masked({"event": "sent", "request": {"body": {"number": "79991234567"}, "to": ["+79991234567"]}})

    assert event == {"event": "sent", "request": {"body": {"number": "7999*****67"}, "to": ["+7999*****67"]}}


def test_values_that_are_not_strings_are_kept_as_they_are() -> None:
    event = masked({"event": "delivered", "attempt": 3, "price": Decimal("0.35"), "final": False})

    assert event == {"event": "delivered", "attempt": 3, "price": Decimal("0.35"), "final": False}


def test_callback_url_loses_its_token() -> None:
    event = masked({"event": "posting to https://cb.example.test/callbacks/voicepassword/Zk3-9_aQx?try=1"})

    assert event == {"event": f"posting to https://cb.example.test/callbacks/voicepassword/{REDACTED}?try=1"}


def test_callback_path_without_a_token_is_left_alone() -> None:
    assert masked({"event": "GET /callbacks/"}) == {"event": "GET /callbacks/"}


# --- redact_secrets -------------------------------------------------------------------


SECRET_KEYS = [
    "code",
    "codes",
    "api_key",
    "apiKey",
    "password",
    "app_secret",
    "authorization",
    "Authorization",
    "callback_url",
    "security",
    "token",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_is_redacted_at_the_top_level(key: str) -> None:
    assert redacted({"event": "sending", key: "s3cr3t-value"}) == {"event": "sending", key: REDACTED}


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_is_redacted_at_any_depth(key: str) -> None:
    event = redacted({"event": "sending", "attempts": [{"request": {key: "s3cr3t-value", "channel": "sms"}}]})

    assert event == {"event": "sending", "attempts": [{"request": {key: REDACTED, "channel": "sms"}}]}


def test_security_section_is_redacted_as_a_whole() -> None:
    event = redacted({"body": {"security": {"apiKey": "k-123"}, "number": "79991234567"}})

    assert event == {"body": {"security": REDACTED, "number": "79991234567"}}


def test_keys_that_merely_mention_codes_are_kept() -> None:
    event = {"event": "started", "code_length": 4, "error_code": "number_in_spam_list", "provider": "vp"}

    assert redacted(dict(event)) == event


def test_secret_of_any_value_type_is_redacted() -> None:
    event = redacted({"code": 1234, "codes": ["1234", "5678"], "security": None})

    assert event == {"code": REDACTED, "codes": REDACTED, "security": REDACTED}


# --- the configured pipeline ----------------------------------------------------------


def json_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_structlog_lines_are_json_with_masked_phones_and_redacted_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(fmt="json")

    structlog.get_logger("worker.test").info(
        "calling", phone="+79991234567", api_key="k-123", body={"voice": {"code": "4821"}}
    )

    [line] = json_lines(capsys.readouterr().err)
    assert line["event"] == "calling"
    assert line["level"] == "info"
    assert line["logger"] == "worker.test"
    assert line["phone"] == "+7999*****67"
    assert line["api_key"] == REDACTED
    assert line["body"] == {"voice": {"code": REDACTED}}


@pytest.mark.usefixtures("restore_logging")
def test_dramatiq_stdlib_lines_are_json_with_masked_phones_and_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(fmt="json")

    dramatiq_log = logging.getLogger("dramatiq")
    dramatiq_log.info("Received message %s with id %r", "start('v1', '79991234567')", "fc-1795786427068-5")
    check: Message[None] = Message(
        queue_name="checks",
        actor_name="check_code",
        args=("v1", "4821", "flashcall:reply:3"),
        kwargs={},
        options={},
    )
    dramatiq_log.info("Received message %s", check)

    first, second = json_lines(capsys.readouterr().err)
    assert first["logger"] == "dramatiq"
    assert first["event"] == "Received message start('v1', '7999*****67') with id 'fc-1795786427068-5'"
    assert second["event"] == f"Received message check_code('v1', '{REDACTED}', 'flashcall:reply:3')"


@pytest.mark.usefixtures("restore_logging")
def test_nothing_raw_reaches_stderr_from_either_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt="json")

    structlog.get_logger("worker.test").warning("refused", number="89991234567", authorization="k-123")
    logging.getLogger("dramatiq").warning("phone %s refused", "+7 (999) 123-45-67")

    err = capsys.readouterr().err
    assert len(json_lines(err)) == 2
    for raw in ("89991234567", "123-45-67", "k-123"):
        assert raw not in err


def _place_call(number: str) -> None:
    api_key = "frame-local-api-key-0f3a"
    request_body = {"number": number, "security": {"apiKey": api_key}}
    raise ValueError(f"provider refused {request_body['number']}")


@pytest.mark.usefixtures("restore_logging")
def test_json_traceback_carries_no_frame_locals(capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt="json")

    try:
        _place_call("+79991234567")
    except ValueError:
        structlog.get_logger("worker.test").exception("attempt crashed")

    err = capsys.readouterr().err
    [line] = json_lines(err)
    [exception] = line["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["exc_value"] == "provider refused +7999*****67"
    assert [frame["name"] for frame in exception["frames"]][-1] == "_place_call"
    assert all("locals" not in frame for frame in exception["frames"])
    assert "frame-local-api-key-0f3a" not in err


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_json_traceback_carries_no_frame_locals(capsys: pytest.CaptureFixture[str]) -> None:
    configure(fmt="json")

    try:
        _place_call("79991234567")
    except ValueError:
        logging.getLogger("dramatiq").exception("actor failed")

    err = capsys.readouterr().err
    [line] = json_lines(err)
    assert line["event"] == "actor failed"
    assert all("locals" not in frame for frame in line["exception"][0]["frames"])
    assert "frame-local-api-key-0f3a" not in err
    assert "79991234567" not in err
