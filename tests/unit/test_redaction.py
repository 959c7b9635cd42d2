"""Codes out of log lines and dead letters (worker/logs/redaction.py and the logging pipeline).

The pipeline tests configure worker.logs.structured as a worker process does, write lines the
way Dramatiq, the actors, the router and HTTP clients write them, and read everything
written to stderr, in both formats. No Redis is involved.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from worker.core import keys
from worker.core.errors import FlashcallError
from worker.logs import redaction
from worker.logs.structured import REDACTED, configure

pytestmark = pytest.mark.usefixtures("restore_logging")

TYPED = "71865432"
"""A typed code no other digit string of these lines contains."""
REPLY = "flashcall:reply:3"
FORMATS = ["json", "console"]


def check_message(
    *args: Any, actor: str = "check_code", queue: str = keys.CHECK_QUEUE, **options: Any
) -> Message[Any]:
    return Message(
        queue_name=queue,
        actor_name=actor,
        args=args or ("order-42", TYPED, REPLY),
        kwargs={},
        options={"redis_message_id": "fc-1795786427068-5", **options},
        message_id="fc-1795786427068-5",
        message_timestamp=1795786427068,
    )


@pytest.fixture(params=FORMATS)
def log_format(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param
    redaction.reset_hidden()


def debug_logging(fmt: str) -> None:
    """Logging as a worker at DEBUG has it. Called by the test itself: capsys's stream is
    the test's own only then."""
    # Imported first: worker.actors configures logging from the environment when imported.
    import worker.actors  # noqa: F401

    configure(fmt=fmt, level="DEBUG")


# --- which arguments are secret ---------------------------------------------------------


def test_each_secret_argument_is_where_its_actors_signature_has_it() -> None:
    from worker import actors

    for secret in redaction.SECRET_ARGUMENTS:
        actor = actors.broker.get_actor(secret.actor)
        assert list(inspect.signature(actor.fn).parameters).index(secret.name) == secret.position
        assert actor.queue_name == secret.queue


def test_a_checks_secret_values_are_its_typed_code_in_every_form_text_gives_it() -> None:
    assert redaction.message_secrets(check_message("order-42", "12\\34", REPLY)) == {"12\\34", "12\\\\34"}


def test_a_code_given_by_keyword_is_secret_too() -> None:
    assert redaction.secret_values("check_code", ["order-42"], {"code": TYPED}) == {TYPED}


def test_a_message_of_another_actor_has_no_secrets() -> None:
    message = check_message("order-42", 0, "start", actor="advance", queue=keys.VERIFY_QUEUE)

    assert redaction.message_secrets(message) == frozenset()


def test_any_message_on_the_checks_queue_is_read_as_a_check() -> None:
    assert redaction.message_secrets(check_message(actor="check_codes")) == {TYPED}


# --- Dramatiq's lines about messages ----------------------------------------------------


def test_dramatiqs_received_message_line_hides_the_typed_code(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    message = MessageProxy(check_message())
    logging.getLogger("dramatiq.worker.WorkerThread").debug(
        "Received message %s with id %r.", message, message.message_id
    )

    err = capsys.readouterr().err
    assert TYPED not in err
    assert f"check_code('order-42', '{REDACTED}', '{REPLY}')" in err


def test_a_message_repr_hides_the_typed_code_in_its_arguments_and_its_traceback(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    message = MessageProxy(check_message(traceback=f"ValueError: code {TYPED} is odd"))
    logging.getLogger("dramatiq.worker.WorkerThread").warning("Failed to post_process_message(%r)", message)

    err = capsys.readouterr().err
    assert TYPED not in err
    assert "order-42" in err


def test_the_actors_own_received_args_line_hides_the_typed_code(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    from worker import actors

    # Outside a worker the actor stops at the runtime, after Dramatiq logged its arguments.
    with pytest.raises(FlashcallError):
        actors.check_code("order-42", TYPED, REPLY)

    err = capsys.readouterr().err
    assert TYPED not in err
    assert f"Received args=('order-42', '{REDACTED}', '{REPLY}')" in err


def test_a_message_among_a_router_lines_values_hides_the_typed_code(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    structlog.get_logger("worker.test").info("message refused", message=check_message())

    err = capsys.readouterr().err
    assert TYPED not in err
    assert REDACTED in err


def test_a_dead_letter_reason_quoting_the_code_is_hidden(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    from worker.process.middleware.deadletters import DeadLetterLog

    message = MessageProxy(check_message())
    message.stuff_exception(ValueError(f"no verification for code {TYPED}"))
    DeadLetterLog().after_nack(None, message)  # type: ignore[arg-type]

    err = capsys.readouterr().err
    assert TYPED not in err
    assert f"no verification for code {REDACTED}" in err


# --- hidden by value, in a context -------------------------------------------------------


def test_a_hidden_value_is_gone_from_any_loggers_line_in_any_form(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    redaction.hide(TYPED)
    logging.getLogger("httpx").warning("HTTP Request: POST https://vp.test/send?code=%s", TYPED)
    structlog.get_logger("worker.test").info(f"voice code {TYPED} sent", body={"voice": {"digits": TYPED}})
    structlog.get_logger("worker.test").info("latency", value=int(TYPED))

    err = capsys.readouterr().err
    assert TYPED not in err
    assert err.count(REDACTED) >= 4


def test_a_hidden_value_is_gone_from_an_exceptions_text_and_traceback(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    redaction.hide(TYPED)
    try:
        raise RuntimeError(f"provider refused code {TYPED}")
    except RuntimeError:
        logging.getLogger("dramatiq.worker.WorkerThread").exception("Failed to process message")

    err = capsys.readouterr().err
    assert TYPED not in err
    assert f"provider refused code {REDACTED}" in err


def test_a_hidden_value_inside_a_longer_number_is_left_alone(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    redaction.hide("7186")
    structlog.get_logger("worker.test").info("numbers", at=1795786427186, ref="971860", code_like="7186")

    line = capsys.readouterr().err
    assert "1795786427186" in line
    assert "971860" in line
    assert REDACTED in line
    assert re.search(r"(?<!\d)7186(?!\d)", line) is None


def test_nothing_is_hidden_once_the_context_is_reset(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    redaction.reset_hidden([TYPED])
    redaction.reset_hidden()
    structlog.get_logger("worker.test").info("unrelated", value=TYPED)

    assert TYPED in capsys.readouterr().err


def test_a_value_hidden_by_a_thread_is_hidden_in_the_coroutines_it_starts(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def provider_call() -> None:
        logging.getLogger("aiohttp.client").warning("request body %s", json.dumps({"code": TYPED}))

    try:
        redaction.reset_hidden([TYPED])
        asyncio.run_coroutine_threadsafe(provider_call(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    assert TYPED not in capsys.readouterr().err


def test_a_value_a_coroutine_hides_stays_in_that_coroutine(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)

    async def attempt() -> None:
        redaction.hide(TYPED)
        structlog.get_logger("worker.test").info("in the attempt", value=TYPED)

    asyncio.run(attempt())
    structlog.get_logger("worker.test").info("after the attempt", value=TYPED)

    err = capsys.readouterr().err
    assert err.count(TYPED) == 1
    assert "after the attempt" in err.splitlines()[-1]


def test_what_a_scoped_coroutine_hides_is_forgotten_when_it_returns(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    debug_logging(log_format)

    @redaction.scoped
    async def attempt(code: str) -> None:
        redaction.hide(code)

    async def many_attempts_in_one_task() -> None:
        for code in ("1111", TYPED):
            await attempt(code)
        structlog.get_logger("worker.test").info("after the attempts", value=TYPED)

    asyncio.run(many_attempts_in_one_task())

    assert TYPED in capsys.readouterr().err


def test_a_value_that_is_part_of_another_hidden_value_leaves_nothing_of_either() -> None:
    hidden = redaction.hidden_values(["cd", "ab-cd"])

    assert redaction.scrub("typed ab-cd, then cd", hidden) == f"typed {REDACTED}, then {REDACTED}"


# --- dead letters -----------------------------------------------------------------------


def body(**fields: Any) -> bytes:
    message: dict[str, Any] = {
        "queue_name": keys.CHECK_QUEUE,
        "actor_name": "check_code",
        "args": ["order-42", TYPED, REPLY],
        "kwargs": {},
        "options": {"redis_message_id": "m-1"},
        "message_id": "m-1",
        "message_timestamp": 1795786427068,
    }
    message.update(fields)
    return json.dumps(message).encode()


def kept(queue: str, data: bytes, reason: str = "message has unknown fields surprise") -> Any:
    return json.loads(redaction.dead_letter_body(queue, data, reason))


def test_a_dead_check_keeps_everything_but_its_typed_code() -> None:
    letter = kept(keys.CHECK_QUEUE, body(surprise=1))

    assert letter["args"] == ["order-42", REDACTED, REPLY]
    assert {name: letter[name] for name in ("actor_name", "message_id", "surprise")} == {
        "actor_name": "check_code",
        "message_id": "m-1",
        "surprise": 1,
    }


def test_a_dead_check_loses_a_code_given_by_keyword() -> None:
    letter = kept(keys.CHECK_QUEUE, body(args=["order-42"], kwargs={"code": TYPED, "reply_key": REPLY}))

    assert letter["kwargs"] == {"code": REDACTED, "reply_key": REPLY}


def test_a_dead_checks_traceback_loses_the_typed_code_but_keeps_its_storage_id() -> None:
    options = {"redis_message_id": "m-1", "traceback": f"TypeError: bad code {TYPED}", "retries": 1}
    letter = kept(keys.CHECK_QUEUE, body(options=options))

    assert letter["options"] == {
        "redis_message_id": "m-1",
        "traceback": f"TypeError: bad code {REDACTED}",
        "retries": 1,
    }


def test_a_check_dead_on_the_verifications_queue_loses_its_typed_code() -> None:
    assert TYPED not in json.dumps(kept(keys.VERIFY_QUEUE, body(queue_name=keys.VERIFY_QUEUE)))


def test_a_message_of_an_unknown_actor_on_the_checks_queue_loses_its_second_argument() -> None:
    assert kept(keys.CHECK_QUEUE, body(actor_name="check_codes"))["args"][1] == REDACTED


def test_a_dead_check_on_the_delay_queue_loses_its_typed_code() -> None:
    assert (
        kept(f"{keys.CHECK_QUEUE}.DQ", body(queue_name=f"{keys.CHECK_QUEUE}.DQ", surprise=1))["args"][1]
        == REDACTED
    )


def test_a_dead_check_whose_arguments_are_not_a_list_keeps_none_of_them() -> None:
    assert kept(keys.CHECK_QUEUE, body(args=f"order-42 {TYPED}"))["args"] == REDACTED


@pytest.mark.parametrize(
    "data",
    [
        body()[:-20],
        body().replace(b"order-42", b"order-\xff"),
        json.dumps(["order-42", TYPED, REPLY]).encode(),
    ],
    ids=["not-json", "not-utf8", "not-an-object"],
)
def test_an_unreadable_body_on_the_checks_queue_is_not_kept(data: bytes) -> None:
    letter = kept(keys.CHECK_QUEUE, data, "message is not UTF-8 JSON")

    assert letter == {"body": REDACTED, "bytes": len(data), "reason": "message is not UTF-8 JSON"}


def test_an_unreadable_body_on_the_verifications_queue_is_kept_as_it_is() -> None:
    assert redaction.dead_letter_body(keys.VERIFY_QUEUE, b"{{{ not json", "message is not UTF-8 JSON") == (
        b"{{{ not json"
    )


def test_a_dead_start_is_kept_byte_for_byte() -> None:
    data = body(queue_name=keys.VERIFY_QUEUE, actor_name="start", args=[{"id": "order-42"}])

    assert redaction.dead_letter_body(keys.VERIFY_QUEUE, data, "message names queue 'checks'") == data


def test_a_redacted_message_prints_without_its_typed_code() -> None:
    message = redaction.redacted_message(MessageProxy(check_message(traceback=f"code {TYPED}")))

    assert TYPED not in str(message)
    assert TYPED not in repr(message)
    assert message.args == ("order-42", REDACTED, REPLY)
