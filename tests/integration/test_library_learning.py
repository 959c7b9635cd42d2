"""What the flashcall library learns from verifications' outcomes, on a real redis-server.

Each delivered attempt is settled once into its provider x channel x operator estimate:
an approval with its code is a hit, a timeout or expiry while it waited a miss; the
leading choice of learned routing moves by compare-and-set, announcing each demotion once.
The clock is the tests' own: every function takes it as an argument.
"""

from __future__ import annotations

import json
from typing import cast

import pytest
import redis

from worker.core import keys
from worker.redis import functions
from worker.redis.functions import AdmissionGuard

pytestmark = pytest.mark.integration

DAY = "20270115"
LEARN = "50:3600000:10"
LEADERS = keys.PREFIX + "learn:leaders"


def guard(cost_e4: int) -> AdmissionGuard:
    """A breaker of 5 failures with a 30 s reset and lease, calls of this cost, no budget."""
    return AdmissionGuard(reset_ms=30_000, lease_ms=30_000, fail_max=5, cost_e4=cost_e4, budget_e4=0, day=DAY)


@pytest.fixture
def t0(library: redis.Redis) -> int:
    """Now, by the server's clock, which stamps a start's expiry."""
    seconds, micros = library.time()
    return int(seconds) * 1000 + int(micros) // 1000


def start(client: redis.Redis, verification_id: str = "order-1") -> None:
    # A number per verification: one number may start one verification per 2 minutes.
    phone = f"+7999{abs(hash(verification_id)) % 10_000_000:07d}"
    functions.start(json.dumps({"id": verification_id, "phone": phone, "ttl": 86400})).run(client)


def begin(
    client: redis.Redis,
    expected: int,
    *,
    now: int,
    provider: str = "cheap",
    code_hash: str = "",
    learn: str = LEARN,
    lead: tuple[str, str, str] = ("", "", ""),
    verification_id: str = "order-1",
) -> list[str]:
    answer: list[str] = functions.begin_attempt(
        verification_id,
        expected_attempt=expected,
        now_ms=now,
        step=expected,
        channel="flashcall",
        provider=provider,
        code_hash=code_hash,
        deadline_ms=now + 30_000,
        guard=guard(3000),
        provider_type="voicepassword",
        operator="megafon",
        learn=learn,
        lead=lead,
    ).send(client)
    return answer


def deliver(
    client: redis.Redis, attempt: int, *, now: int, provider: str = "cheap", verification_id: str = "order-1"
) -> None:
    functions.attempt_delivered(
        verification_id,
        attempt=attempt,
        now_ms=now,
        provider=provider,
        channel="flashcall",
        step=attempt - 1,
        ref=f"ref-{attempt}",
        price_e4=3000,
        code_hash="",
        provider_checks=False,
        step_deadline_ms=now + 60_000,
        latency_ms=100,
        day=DAY,
    ).run(client)


def time_out(client: redis.Redis, attempt: int, *, now: int, verification_id: str = "order-1") -> str:
    return functions.attempt_failed(
        verification_id,
        attempt=attempt,
        now_ms=now,
        outcome="timeout",
        error_code="",
        state="timed_out",
        recovery_at_ms=now + 1,
        discard_code=False,
        provider_fault=False,
        latency_ms=-1,
        no_money_ms=0,
    ).run(client)


def fail(client: redis.Redis, attempt: int, *, now: int) -> str:
    return functions.attempt_failed(
        "order-1",
        attempt=attempt,
        now_ms=now,
        outcome="busy",
        error_code="BUSY",
        state="failed",
        recovery_at_ms=now + 1,
        discard_code=True,
        provider_fault=False,
        latency_ms=100,
        no_money_ms=0,
    ).run(client)


def check(client: redis.Redis, code_hash: str, *, now: int) -> str | functions.AskProvider:
    return functions.apply_check("order-1", proof=f"hash:{code_hash}", reply_key="reply:1", now_ms=now).run(
        client
    )


def learned(client: redis.Redis, provider: str = "cheap") -> tuple[float, float, float] | None:
    """(attempts, approvals, ms to approval) of the provider's flash calls to MegaFon numbers."""
    raw = cast(str | None, client.hget(keys.PREFIX + f"learn:{provider}", "flashcall|megafon"))
    if raw is None:
        return None
    trials, approvals, approval_ms, _ = raw.split(" ")
    return float(trials), float(approvals), float(approval_ms)


def demotions(client: redis.Redis) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["event"] == "demoted"]


def test_an_approval_with_the_code_of_a_delivered_attempt_is_a_hit(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01")
    deliver(library, 1, now=t0 + 500)

    assert check(library, "aa01", now=t0 + 12_000) == "approved"
    assert learned(library) == (1.0, 1.0, 12_000.0)


def test_a_delivered_attempt_that_times_out_is_a_miss(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01")
    deliver(library, 1, now=t0 + 500)

    time_out(library, 1, now=t0 + 60_000)

    assert learned(library) == (1.0, 0.0, 0.0)


def test_a_delivered_attempt_waiting_when_the_verification_expires_is_a_miss(
    library: redis.Redis, t0: int
) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01")
    deliver(library, 1, now=t0 + 500)
    library.zadd(keys.PREFIX + "timers:expire", {"order-1": t0 + 1000})

    functions.fire_timers(now_ms=t0 + 1000, limit=10).run(library)

    assert learned(library) == (1.0, 0.0, 0.0)


def test_an_attempt_that_failed_before_delivery_is_not_learned(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01")

    fail(library, 1, now=t0 + 500)

    assert learned(library) is None


def test_a_timeout_recorded_twice_counts_once(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0)
    deliver(library, 1, now=t0 + 500)

    assert time_out(library, 1, now=t0 + 60_000) == "ok"
    assert time_out(library, 1, now=t0 + 60_000) == "stale"
    assert learned(library) == (1.0, 0.0, 0.0)


def test_the_code_of_an_earlier_attempt_credits_the_provider_that_carried_it(
    library: redis.Redis, t0: int
) -> None:
    # cheap's flash call was counted a miss at its timeout; the user types its code while
    # dear's call is waiting: cheap converted after all, dear is not judged.
    start(library)
    begin(library, 0, now=t0, provider="cheap", code_hash="aa01")
    deliver(library, 1, now=t0 + 500, provider="cheap")
    time_out(library, 1, now=t0 + 60_000)
    begin(library, 1, now=t0 + 60_001, provider="dear", code_hash="bb02")
    deliver(library, 2, now=t0 + 60_500, provider="dear")

    assert check(library, "aa01", now=t0 + 70_000) == "approved"
    assert learned(library, "cheap") == pytest.approx((1.0, 1.0, 0.0), rel=0.01)
    assert learned(library, "dear") is None


def test_without_a_learning_spec_nothing_is_learned(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01", learn="")
    deliver(library, 1, now=t0 + 500)

    check(library, "aa01", now=t0 + 12_000)

    assert learned(library) is None


def test_an_estimate_remembers_about_memory_observations(library: redis.Redis, t0: int) -> None:
    for n in range(200):
        verification_id = f"order-m{n}"
        start(library, verification_id)
        begin(library, 0, now=t0, learn="10:3600000:5", verification_id=verification_id)
        deliver(library, 1, now=t0, verification_id=verification_id)
        time_out(library, 1, now=t0, verification_id=verification_id)

    found = learned(library)
    assert found is not None
    assert found[0] == pytest.approx(10.0, rel=0.01)


def test_an_estimate_fades_with_the_time_it_goes_unobserved(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01")
    deliver(library, 1, now=t0 + 500)
    check(library, "aa01", now=t0 + 10_000)
    start(library, "order-2")
    an_hour_on = t0 + 3_600_000 + 10_000
    begin(library, 0, now=an_hour_on, verification_id="order-2")
    deliver(library, 1, now=an_hour_on, verification_id="order-2")
    time_out(library, 1, now=an_hour_on, verification_id="order-2")

    found = learned(library)
    assert found is not None
    # The hit, an hour old, weighs half (times 1 - 1/50 for the new observation); the miss 1.
    assert found[0] == pytest.approx(0.5 * 0.98 + 1)
    assert found[1] == pytest.approx(0.5 * 0.98)


def test_the_first_lead_is_recorded_without_a_demotion(library: redis.Redis, t0: int) -> None:
    start(library)

    answer = begin(library, 0, now=t0, lead=("default:flashcall:megafon", "", "cheap"))

    assert answer == ["ok", "closed"]
    assert library.hget(LEADERS, "default:flashcall:megafon") == "cheap"
    assert demotions(library) == []


def test_moving_the_lead_announces_one_demotion(library: redis.Redis, t0: int) -> None:
    library.hset(LEADERS, "default:flashcall:megafon", "cheap")
    start(library)
    start(library, "order-2")

    first = begin(library, 0, now=t0, provider="dear", lead=("default:flashcall:megafon", "cheap", "dear"))
    second = begin(
        library,
        0,
        now=t0,
        provider="dear",
        lead=("default:flashcall:megafon", "cheap", "dear"),
        verification_id="order-2",
    )

    assert (first, second) == (["ok", "closed", "demoted"], ["ok", "closed"])
    [event] = demotions(library)
    assert {k: event[k] for k in ("provider", "to_provider", "policy", "channel", "operator", "reason")} == {
        "provider": "cheap",
        "to_provider": "dear",
        "policy": "default",
        "channel": "flashcall",
        "operator": "megafon",
        "reason": "learned",
    }
    assert library.hget(keys.PREFIX + "metrics", "demoted|cheap|flashcall|megafon") == "1"


def test_an_attempt_refused_by_its_provider_moves_no_lead(library: redis.Redis, t0: int) -> None:
    library.hset(LEADERS, "default:flashcall:megafon", "cheap")
    library.set(keys.PREFIX + "provider:dear:no_money", "1")
    start(library)

    assert begin(
        library, 0, now=t0, provider="dear", lead=("default:flashcall:megafon", "cheap", "dear")
    ) == ["no_money"]
    assert library.hget(LEADERS, "default:flashcall:megafon") == "cheap"


def test_the_learning_state_holds_every_estimate_and_lead(library: redis.Redis, t0: int) -> None:
    start(library)
    begin(library, 0, now=t0, code_hash="aa01", lead=("default:flashcall:megafon", "", "cheap"))
    deliver(library, 1, now=t0 + 500)
    check(library, "aa01", now=t0 + 2_000)

    answer = functions.learning_state(["cheap", "dear"]).run(library)

    assert answer == {
        "learned": {
            "cheap": {
                "flashcall|megafon": f"1.000000 1.000000 2000.0 {t0 + 2_000}",
                "flashcall|*": f"1.000000 1.000000 2000.0 {t0 + 2_000}",
            },
            "dear": {},
        },
        "leaders": {"default:flashcall:megafon": "cheap"},
    }


def test_an_sms_that_re_sent_an_earlier_calls_code_is_credited_with_the_approval(
    library: redis.Redis, t0: int
) -> None:
    start(library)
    begin(library, 0, now=t0, provider="cheap", code_hash="aa01")
    deliver(library, 1, now=t0 + 500, provider="cheap")
    time_out(library, 1, now=t0 + 60_000)
    functions.begin_attempt(
        "order-1",
        expected_attempt=1,
        now_ms=t0 + 60_001,
        step=1,
        channel="sms",
        provider="cheap",
        code_hash="",
        deadline_ms=t0 + 90_000,
        guard=guard(33000),
        provider_type="voicepassword",
        operator="megafon",
        learn=LEARN,
    ).run(library)
    functions.attempt_delivered(
        "order-1",
        attempt=2,
        now_ms=t0 + 60_500,
        provider="cheap",
        channel="sms",
        step=1,
        ref="ref-2",
        price_e4=33000,
        code_hash="",
        provider_checks=False,
        step_deadline_ms=0,
        latency_ms=100,
        day=DAY,
    ).run(library)

    assert check(library, "aa01", now=t0 + 70_000) == "approved"
    sms = cast(str, library.hget(keys.PREFIX + "learn:cheap", "sms|megafon")).split(" ")
    assert (float(sms[0]), float(sms[1])) == (1.0, 1.0)
    assert learned(library, "cheap") == (1.0, 0.0, 0.0)


def test_the_providers_recent_conversion_over_every_range_has_a_short_memory(
    library: redis.Redis, t0: int
) -> None:
    for n in range(40):
        verification_id = f"order-r{n}"
        start(library, verification_id)
        begin(library, 0, now=t0, learn="50:3600000:5", verification_id=verification_id)
        deliver(library, 1, now=t0, verification_id=verification_id)
        time_out(library, 1, now=t0, verification_id=verification_id)

    recent = cast(str, library.hget(keys.PREFIX + "learn:cheap", "flashcall|*")).split(" ")
    assert float(recent[0]) == pytest.approx(5.0, rel=0.01)
