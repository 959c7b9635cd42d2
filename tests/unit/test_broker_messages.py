"""Which decoded queue messages the broker's consumer accepts (`_problem` in worker/redis/broker.py).

The consumer fetches each message as (id it is queued under, body); a message it cannot
process goes to the dead-letter queue with the reason `_problem` gives. These tests pin
that reason for every kind of malformed message. No Redis is involved.
"""

from __future__ import annotations

from typing import Any

import pytest

from worker.redis.broker import _problem

QUEUE = "verifications"
MESSAGE_ID = "fc-1795786427068-5"
FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


def message(**changes: Any) -> dict[str, Any]:
    """A message as flashcall.lua's enqueue() writes it, with changes."""
    fields: dict[str, Any] = {
        "queue_name": QUEUE,
        "actor_name": "start",
        "args": ["order-42"],
        "kwargs": {},
        "options": {"redis_message_id": MESSAGE_ID},
        "message_id": MESSAGE_ID,
        "message_timestamp": 1795786427068,
    }
    fields.update(changes)
    return fields


def test_well_formed_message_has_no_problem() -> None:
    assert _problem(message(), QUEUE, MESSAGE_ID) is None


def test_message_with_a_numeric_eta_has_no_problem() -> None:
    options = {"redis_message_id": MESSAGE_ID, "eta": 1795786487068}

    assert _problem(message(options=options), QUEUE, MESSAGE_ID) is None


def test_message_with_a_float_eta_has_no_problem() -> None:
    options = {"redis_message_id": MESSAGE_ID, "eta": 1795786487068.5}

    assert _problem(message(options=options), QUEUE, MESSAGE_ID) is None


@pytest.mark.parametrize(
    "decoded", [["start", "order-42"], "start", 42, None], ids=["list", "str", "int", "null"]
)
def test_message_that_is_not_an_object_is_refused(decoded: Any) -> None:
    assert _problem(decoded, QUEUE, MESSAGE_ID) == "message is not a JSON object"


@pytest.mark.parametrize("field", FIELDS)
def test_message_missing_a_field_is_refused_naming_it(field: str) -> None:
    fields = message()
    del fields[field]

    assert _problem(fields, QUEUE, MESSAGE_ID) == f"message lacks {field}"


def test_message_missing_several_fields_names_them_all_in_order() -> None:
    fields = message()
    del fields["options"], fields["args"]

    assert _problem(fields, QUEUE, MESSAGE_ID) == "message lacks args, options"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queue_name", 7),
        ("actor_name", None),
        ("args", "order-42"),
        ("args", {"id": "order-42"}),
        ("kwargs", []),
        ("options", "fc-1-1"),
        ("message_id", 1795786427068),
        ("message_timestamp", "1795786427068"),
        ("message_timestamp", 1795786427068.0),
        ("message_timestamp", True),
    ],
    ids=[
        "queue_name-int",
        "actor_name-null",
        "args-str",
        "args-object",
        "kwargs-list",
        "options-str",
        "message_id-int",
        "message_timestamp-str",
        "message_timestamp-float",
        "message_timestamp-bool",
    ],
)
def test_message_field_of_the_wrong_type_is_refused_naming_it(field: str, value: Any) -> None:
    assert (
        _problem(message(**{field: value}), QUEUE, MESSAGE_ID)
        == f"message field {field!r} has the wrong type"
    )


def test_message_with_an_unknown_field_is_refused_naming_it() -> None:
    assert _problem(message(priority=0), QUEUE, MESSAGE_ID) == "message has unknown fields priority"


WRONG_REDIS_ID = "message option redis_message_id is not the id the message is queued under"


@pytest.mark.parametrize("options", [{}, {"redis_message_id": 5}, {"redis_message_id": None}])
def test_message_options_without_a_redis_message_id_are_refused(options: dict[str, Any]) -> None:
    assert _problem(message(options=options), QUEUE, MESSAGE_ID) == WRONG_REDIS_ID


def test_message_whose_redis_message_id_is_not_its_queue_id_is_refused() -> None:
    fields = message(options={"redis_message_id": "fc-1795786427068-6"})

    assert _problem(fields, QUEUE, MESSAGE_ID) == WRONG_REDIS_ID


def test_message_queued_under_another_id_is_refused() -> None:
    assert _problem(message(), QUEUE, "fc-1795786427068-9") == WRONG_REDIS_ID


def test_message_id_field_may_differ_from_the_redis_message_id() -> None:
    assert _problem(message(message_id="dramatiq-uuid-1"), QUEUE, MESSAGE_ID) is None


def test_message_naming_another_queue_is_refused() -> None:
    problem = _problem(message(queue_name="checks"), QUEUE, MESSAGE_ID)

    assert problem == "message names queue 'checks' but sits on 'verifications'"


@pytest.mark.parametrize("eta", ["soon", "1795786487068", True, [1], {}])
def test_message_with_a_non_numeric_eta_is_refused(eta: Any) -> None:
    options = {"redis_message_id": MESSAGE_ID, "eta": eta}

    assert _problem(message(options=options), QUEUE, MESSAGE_ID) == "message option 'eta' is not a number"
