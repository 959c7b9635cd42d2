"""The conversion guard (routing.yaml's fraud.guard) on a real redis-server: a number range
whose starts rise far above their history while none is approved is held, lengthening
each time; approvals keep a busy range open; an operator lists and releases holds."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, cast

import pytest
import redis

from tests.support import GUARD as GUARD_OF_ADMISSION
from tests.support import issue_token
from tests.support import redis_now as now_ms
from worker.core import keys
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.routing.config import GuardConfig

pytestmark = pytest.mark.integration

RANGE = "7900555"
#: Hold a range at 10 starts within a minute, against a day's history.
GUARD = GuardConfig(
    window=60, history=86400, min_starts=10, rise=5, min_conversion=0.5, hold=60, max_hold=600
)


def guarded(client: redis.Redis, guard: GuardConfig = GUARD, lists: dict[str, str] | None = None) -> None:
    config = PublishedConfig(
        policies=("default",), per_phone=((10**6, 60_000),), guard=guard.published, lists=lists or {}
    )
    functions.publish_config(config).run(client)


def start(client: redis.Redis, n: int, number_range: str = RANGE) -> dict[str, Any]:
    request = {"id": f"v-{number_range}-{n}", "phone": f"+{number_range}{n % 10000:04d}"}
    return functions.start(json.dumps(request)).run(client)


def pump(client: redis.Redis, count: int, number_range: str = RANGE, first: int = 0) -> list[str]:
    return [start(client, first + n, number_range).get("reason", "admitted") for n in range(count)]


def approved(client: redis.Redis, n: int) -> None:
    """A verification of the range started, called and approved, as producer and worker do."""
    verification_id = f"v-{RANGE}-{n}"
    issue_token(client, f"token-{n}", verification_id=verification_id, phone=f"+{RANGE}{n:04d}")
    reply_key = functions.check(json.dumps({"id": verification_id, "code": "1234"})).run(client)
    answer = functions.apply_check(verification_id, proof="1", reply_key=reply_key, now_ms=now_ms(client))
    assert answer.run(client) == "approved"


def claim_first_attempt(client: redis.Redis, verification_id: str) -> functions.Claim:
    """What a worker's claim of the verification's first attempt gets."""
    now = now_ms(client)
    return functions.begin_attempt(
        verification_id,
        expected_attempt=0,
        now_ms=now,
        step=0,
        channel="flashcall",
        provider="vp",
        code_hash="",
        deadline_ms=now + 30_000,
        guard=GUARD_OF_ADMISSION,
    ).run(client)


def guard_events(client: redis.Redis) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["event"].startswith("fraud_")]


def test_a_range_pumped_with_starts_nobody_approves_is_held(library: redis.Redis) -> None:
    guarded(library)

    outcomes = pump(library, 15)

    assert outcomes[:9] == ["admitted"] * 9
    assert set(outcomes[9:]) == {"fraud_suspected"}


def test_a_held_start_is_told_when_the_range_may_start_again(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)

    answer = start(library, 99)

    assert (answer["status"], answer["reason"]) == ("failed", "fraud_suspected")
    assert 1 <= answer["retry_after"] <= 60


def test_another_range_is_not_held(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 12)

    assert start(library, 1, "7900556")["status"] == "pending"


def test_a_range_whose_starts_are_approved_stays_open(library: redis.Redis) -> None:
    guarded(library)
    for n in range(30):
        approved(library, n)

    assert start(library, 30)["status"] == "pending"


def test_a_range_on_the_safe_list_is_never_held(library: redis.Redis) -> None:
    guarded(library, lists={RANGE: "safe"})

    assert set(pump(library, 20)) == {"admitted"}


def test_the_hold_writes_one_event_and_lengthens_when_the_range_is_held_again(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)
    first = functions.fraud_list(now_ms=now_ms(library)).run(library)
    functions.fraud_release(RANGE, now_ms=now_ms(library)).run(library)
    pump(library, 1, first=100)
    second = functions.fraud_list(now_ms=now_ms(library)).run(library)

    held = [event for event in guard_events(library) if event["event"] == "fraud_held"]

    assert [entry.level for entry in first + second] == [1, 2]
    assert 110_000 <= second[0].until_ms - now_ms(library) <= 120_000
    assert [event["range"] for event in held] == [RANGE, RANGE]


def test_an_operator_release_opens_the_range_and_is_written_as_an_event(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)

    answer = functions.fraud_release(RANGE, now_ms=now_ms(library)).run(library)
    released = [event for event in guard_events(library) if event["event"] == "fraud_released"]

    assert answer == "released"
    assert functions.fraud_list(now_ms=now_ms(library)).run(library) == []
    assert [(event["range"], event["reason"]) for event in released] == [(RANGE, "operator")]


def test_releasing_a_range_that_is_not_held_says_so(library: redis.Redis) -> None:
    guarded(library)

    assert functions.fraud_release(RANGE, now_ms=now_ms(library)).run(library) == "not_held"


def test_a_hold_that_ran_out_is_released_and_a_range_still_pumped_is_held_again(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)
    library.hset(keys.PREFIX + f"guard:{RANGE}", "held_until", now_ms(library) - 1)

    start(library, 50)

    assert [(event["event"], event.get("reason", "")) for event in guard_events(library)] == [
        ("fraud_held", ""),
        ("fraud_released", "expired"),
        ("fraud_held", ""),
    ]


def test_a_held_start_costs_a_refused_starts_few_hundred_bytes(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)
    start(library, 77)

    assert (library.memory_usage(keys.verification(f"v-{RANGE}-77"), samples=0) or 0) < 300
    assert library.llen(keys.queue(keys.VERIFY_QUEUE)) == 9


def test_without_a_guard_a_start_writes_nothing_for_it(library: redis.Redis) -> None:
    functions.publish_config(PublishedConfig(policies=("default",), per_phone=((10**6, 60_000),))).run(
        library
    )
    pump(library, 15)

    assert list(library.scan_iter(keys.PREFIX + "guard:*")) == []


def flashcall(library_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args, "--redis-url", library_url],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_fraud_list_shows_each_held_range_and_when_it_is_released(
    library: redis.Redis, library_url: str
) -> None:
    guarded(library)
    pump(library, 10)

    shown = flashcall(library_url, "fraud", "list")

    assert shown.returncode == 0
    [line] = shown.stdout.splitlines()
    assert line.startswith(f"{RANGE}  held until ")
    assert line.endswith("hold 1")


def test_fraud_release_releases_the_range(library: redis.Redis, library_url: str) -> None:
    guarded(library)
    pump(library, 10)

    released = flashcall(library_url, "fraud", "release", RANGE)

    assert (released.returncode, released.stdout) == (0, f"released: {RANGE}\n")
    assert flashcall(library_url, "fraud", "list").stdout == "no range is held\n"


def test_fraud_release_of_a_range_not_held_is_one_line_and_status_1(library_url: str) -> None:
    # A request refused, not a usage error (docs/operations.md, "Exit statuses").
    released = flashcall(library_url, "fraud", "release", RANGE)

    assert released.returncode == 1
    assert released.stderr == f"flashcall: range {RANGE} is not held\n"


def test_a_reporter_takes_each_hold_once(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)

    first = functions.fraud_report(now_ms=now_ms(library)).run(library)
    again = functions.fraud_report(now_ms=now_ms(library)).run(library)

    assert [(change.kind, change.range, change.level) for change in first] == [("held", RANGE, 1)]
    assert again == []


def test_a_reporter_releases_a_hold_that_ran_out_though_the_range_starts_no_more(
    library: redis.Redis,
) -> None:
    guarded(library)
    pump(library, 10)
    functions.fraud_report(now_ms=now_ms(library)).run(library)
    library.hset(keys.PREFIX + f"guard:{RANGE}", "held_until", now_ms(library) - 1)

    changes = functions.fraud_report(now_ms=now_ms(library)).run(library)

    assert [(change.kind, change.range, change.reason) for change in changes] == [
        ("released", RANGE, "expired")
    ]
    assert functions.fraud_list(now_ms=now_ms(library)).run(library) == []


def test_a_verification_admitted_before_its_range_was_held_gets_no_further_call(library: redis.Redis) -> None:
    guarded(library)
    pump(library, 10)

    claim = claim_first_attempt(library, f"v-{RANGE}-0")

    assert claim.result == "fraud_suspected"


def test_a_verification_of_a_range_not_held_is_claimed_as_ever(library: redis.Redis) -> None:
    guarded(library)
    start(library, 0)

    claim = claim_first_attempt(library, f"v-{RANGE}-0")

    assert claim.result == "ok"


def test_a_pump_that_goes_on_through_the_hold_is_held_again_by_its_first_start_after(
    library: redis.Redis,
) -> None:
    guarded(library)
    pump(library, 10)
    pump(library, 40, first=10)
    library.hset(keys.PREFIX + f"guard:{RANGE}", "held_until", now_ms(library) - 1)

    assert start(library, 99)["reason"] == "fraud_suspected"
    again = [event for event in guard_events(library) if event["event"] == "fraud_held"][-1]
    assert (again["level"], int(again["starts"]) >= 50) == ("2", True)
