"""A start refused for its number's limits (rate_limited), on a real redis-server: the
producer gets its answer, the id answers status, checks and repeats with the refusal, and
what it leaves in Redis is small, short-lived and bounded in total (docs/operations.md,
"What a refused start costs")."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis

from worker.core import keys
from worker.redis import functions

pytestmark = pytest.mark.integration

PHONE = "+79991234567"
METADATA = {"note": "x" * 1000}
#: What one refused start may leave in Redis, all keys and its event together (measured
#: about 340 bytes: the record ~230, its place in the refused list ~25, its event ~80).
BYTES_PER_REFUSED_START = 400
REFUSED = keys.REFUSED
REFUSED_MAX = 100_000
HOUR_MS = 3_600_000


def start(client: redis.Redis, verification_id: str, phone: str = PHONE, **fields: Any) -> dict[str, Any]:
    request = {"id": verification_id, "phone": phone, **fields}
    return functions.start(json.dumps(request)).run(client)


def refused_start(client: redis.Redis, verification_id: str, **fields: Any) -> dict[str, Any]:
    """A start of a number that has just started another verification."""
    if not client.exists(keys.PREFIX + "phone:79991234567"):
        assert start(client, "first")["status"] == "pending"
    answer = start(client, verification_id, metadata=METADATA, **fields)
    assert answer["reason"] == "rate_limited"
    return answer


def memory(client: redis.Redis, key: str) -> int:
    return client.memory_usage(key, samples=0) or 0


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def status_of(client: redis.Redis, verification_id: str = "order-42") -> dict[str, Any]:
    return functions.status(verification_id).run(client)


def events(client: redis.Redis, verification_id: str) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["id"] == verification_id]


def test_the_producer_is_told_the_start_was_refused_and_when_to_try_again(library: redis.Redis) -> None:
    answer = refused_start(library, "order-42")

    assert (answer["status"], answer["created"]) == ("failed", True)
    assert 119 <= answer["retry_after"] <= 120


def test_a_refused_start_keeps_no_metadata(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    assert not library.hexists(keys.verification("order-42"), "metadata")
    assert "metadata" not in functions.status("order-42").run(library)


def test_a_refused_start_keeps_a_record_of_a_few_hundred_bytes(library: redis.Redis) -> None:
    refused_start(library, "order-1000042-attempt-3")

    assert memory(library, keys.verification("order-1000042-attempt-3")) < 300


def test_three_hundred_refused_starts_with_metadata_cost_a_bounded_total(library: redis.Redis) -> None:
    refused_start(library, "order-0")
    before = memory(library, keys.EVENTS) + memory(library, REFUSED)

    for n in range(1, 301):
        refused_start(library, f"order-{n}")

    records = sum(memory(library, keys.verification(f"order-{n}")) for n in range(1, 301))
    added = records + memory(library, keys.EVENTS) + memory(library, REFUSED) - before
    assert added <= 300 * BYTES_PER_REFUSED_START


def test_a_refused_start_writes_one_failed_event_without_metadata(library: redis.Redis) -> None:
    refused_start(library, "order-42", client_ip="203.0.113.7")

    assert events(library, "order-42") == [
        {
            "event": "failed",
            "id": "order-42",
            "status": "failed",
            "at": events(library, "order-42")[0]["at"],
            "attempt": "0",
            "reason": "rate_limited",
            "limit": "per_phone",
            "client_ip": "203.0.113.7",
        }
    ]


def test_the_status_of_a_refused_id_answers_the_refusal_with_every_documented_field(
    library: redis.Redis,
) -> None:
    refused_start(library, "order-42")

    status = functions.status("order-42").run(library)

    at = status["created_at"]
    assert status == {
        "id": "order-42",
        "status": "failed",
        "reason": "rate_limited",
        "phone": "+7999*****67",
        "policy": "default",
        "attempts": 0,
        "checks_left": 3,
        "cost": "0.00",
        "created_at": at,
        "updated_at": at,
        "expires_at": at,
    }


def test_a_refused_id_is_remembered_for_an_hour(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    assert HOUR_MS - 60_000 < library.pttl(keys.verification("order-42")) <= HOUR_MS


def test_a_check_of_a_refused_id_is_rejected_uncounted(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    reply_key = functions.check(json.dumps({"id": "order-42", "code": "4567"})).run(library)

    answer = json.loads(cast(list[str], library.blpop([reply_key], 1))[1])
    assert answer == {"id": "order-42", "result": "rejected", "status": "failed", "attempts_left": 3}


def test_a_cancel_of_a_refused_id_leaves_it_refused(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    assert functions.cancel("order-42").run(library)["reason"] == "rate_limited"


def test_a_refused_start_sent_again_answers_the_same_refusal(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    again = start(library, "order-42", metadata=METADATA)

    assert again == {"id": "order-42", "status": "failed", "reason": "rate_limited", "created": False}


def test_a_refused_id_stays_bound_to_its_number(library: redis.Redis) -> None:
    refused_start(library, "order-42")

    with pytest.raises(redis.ResponseError, match="already used by a verification of another phone"):
        start(library, "order-42", phone="+79997654321")


def fill_refused_list(client: redis.Redis, entries: int, at: int) -> None:
    """Refused ids of other numbers, as many refusals before would have left in the list."""
    batch = 10_000
    for first in range(0, entries, batch):
        client.rpush(REFUSED, *(f"{at} filler-{n}" for n in range(first, min(first + batch, entries))))


def test_past_the_cap_the_oldest_refused_id_is_forgotten(library: redis.Redis) -> None:
    refused_start(library, "oldest")
    fill_refused_list(library, REFUSED_MAX - 1, now_ms(library))

    refused_start(library, "newest")

    assert functions.status("oldest").run(library)["status"] == "not_found"
    assert functions.status("newest").run(library)["reason"] == "rate_limited"
    assert library.llen(REFUSED) == REFUSED_MAX


def test_a_refused_id_that_aged_out_leaves_the_list(library: redis.Redis) -> None:
    library.rpush(REFUSED, f"{now_ms(library) - HOUR_MS - 1} long-gone")

    refused_start(library, "order-42")

    assert cast(list[str], library.lrange(REFUSED, 0, -1)) == [f"{status_of(library)['created_at']} order-42"]


def test_forgetting_a_refused_id_spares_a_verification_started_since_under_it(library: redis.Redis) -> None:
    start(library, "order-42", phone="+79997654321")
    # The worst case: the verification's creation time is the one the list remembers.
    aged = now_ms(library) - HOUR_MS - 1
    library.hset(keys.verification("order-42"), "created_at", aged)
    library.rpush(REFUSED, f"{aged} order-42")

    refused_start(library, "another")

    assert functions.status("order-42").run(library)["status"] == "pending"
