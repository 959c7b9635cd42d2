"""flashcall_admission, what `flashcall routing explain` asks first: the answer
flashcall_start would give a new verification of a number now, from the start's own code,
with nothing written. On a real redis-server holding only the library.

A table of numbers, each prepared as a producer's earlier starts would leave it; for each,
the admission is asked, then a real start made: the two agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.routing.config import GuardConfig
from worker.routing.report import Refusal, read_admission

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
#: A range is held at its second start in a window nobody approves.
GUARD = GuardConfig(window=600, history=86400, min_starts=2, rise=1.5, hold=900, max_hold=3600)
CONFIG = PublishedConfig(
    policies=("default",),
    per_phone=((1, HOUR_MS),),
    keyed={"per_ip": ((2, HOUR_MS),)},
    lists={"7999000": "blocked", "7999111": "safe"},
    guard=GUARD.published,
)


def start(client: redis.Redis, verification_id: str, phone: str, **fields: Any) -> dict[str, Any]:
    request = {"id": verification_id, "phone": "+" + phone, **fields}
    return functions.start(json.dumps(request)).run(client)


def nothing(_: redis.Redis) -> None:
    pass


def started_once(client: redis.Redis) -> None:
    start(client, "earlier", "79161234567")


def address_used_twice(client: redis.Redis) -> None:
    # Numbers of ranges of their own: the guard holds none.
    for n in range(2):
        start(client, f"earlier-{n}", f"792{n}1234560", client_ip="203.0.113.7")


def range_started_once(client: redis.Redis) -> None:
    start(client, "earlier", "79035550001")


#: case -> (number, client_ip, what came before, what the start answers: None for taken).
CASES: dict[str, tuple[str, str | None, Callable[[redis.Redis], None], Refusal | None]] = {
    "a number never started": ("79161234567", None, nothing, None),
    "a Kazakh number (refused later, by the worker)": ("77011234567", None, nothing, None),
    "a number on the block list": ("79990001234", None, nothing, Refusal("blocked")),
    "a number that started within its limit": (
        "79161234567",
        None,
        started_once,
        Refusal("rate_limited", "per_phone"),
    ),
    "an address over its limit": (
        "79291234569",
        "203.0.113.7",
        address_used_twice,
        Refusal("rate_limited", "per_ip"),
    ),
    "a range this start makes suspect": (
        "79035550002",
        None,
        range_started_once,
        Refusal("fraud_suspected"),
    ),
    "a safe number's range is never suspect": ("79991110002", None, nothing, None),
}


@pytest.fixture
def published(library: redis.Redis) -> redis.Redis:
    functions.publish_config(CONFIG).run(library)
    return library


def answered(answer: dict[str, Any]) -> Refusal | None:
    """A start's answer as read_admission states it."""
    if answer["status"] == "pending":
        return None
    return Refusal(answer["reason"], answer.get("limit"), answer.get("retry_after"))


def stated(refusal: Refusal | None) -> tuple[str, str | None] | None:
    """A refusal without its wait, which depends on the clock."""
    return None if refusal is None else (refusal.reason, refusal.limit)


def snapshot(client: redis.Redis) -> dict[Any, Any]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_the_admission_is_what_a_real_start_answers(published: redis.Redis, case: str) -> None:
    phone, client_ip, before, expected = CASES[case]
    before(published)

    admission = read_admission(published, phone=phone, client_ip=client_ip)
    fields = {"client_ip": client_ip} if client_ip else {}
    real = answered(start(published, "now", phone, **fields))

    assert stated(admission) == stated(expected)
    assert stated(real) == stated(admission)
    if admission is not None and admission.retry_after is not None:
        # The start asks the clock a moment later: its wait is the same, or a second less.
        assert real is not None
        assert real.retry_after is not None
        assert 0 <= admission.retry_after - real.retry_after <= 1


@pytest.mark.parametrize("case", list(CASES))
def test_asking_the_admission_writes_nothing(published: redis.Redis, case: str) -> None:
    phone, client_ip, before, _ = CASES[case]
    before(published)
    kept = snapshot(published)

    read_admission(published, phone=phone, client_ip=client_ip)

    assert snapshot(published) == kept


def test_a_request_the_start_would_refuse_outright_is_refused_by_the_admission(
    published: redis.Redis,
) -> None:
    with pytest.raises(redis.ResponseError, match="'client_ip' must be an IPv4 or IPv6 address"):
        read_admission(published, phone="79161234567", client_ip="999")
