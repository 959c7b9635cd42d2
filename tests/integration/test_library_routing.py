"""The routing half of the flashcall Redis library, on a redis-server of its own with no worker:
admission when an attempt is claimed (breaker, trial lease, probing cap, money, daily
budget), the marks and counters the attempt functions leave, `flashcall_routing_state`,
and the per-number limits of `flashcall_start`.

Functions are called as a worker calls them; those that take the clock take it as an
argument, so breaker timeouts are crossed by passing a later `now`. Leases and marks
expire by Redis's own clock.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, cast

import pytest
import redis

from worker.core import keys
from worker.redis import functions
from worker.redis.functions import AdmissionGuard, PublishedConfig

pytestmark = pytest.mark.integration

DAY = "20261127"
PROVIDER = "vp"
FAIL_MAX = 3
RESET_MS = 30_000
LEASE_MS = 30_000
COST_E4 = 3500
NO_MONEY_MS = 600_000


def phone_of(number: int) -> str:
    return f"+7999123{number:04d}"


def start(client: redis.Redis, verification_id: str, phone: str = "+79991230000") -> dict[str, Any]:
    return functions.start(json.dumps({"id": verification_id, "phone": phone})).run(client)


def started(client: redis.Redis, count: int) -> list[str]:
    """`count` pending verifications of different numbers: v0, v1, ..."""
    ids = [f"v{number}" for number in range(count)]
    for number, verification_id in enumerate(ids):
        assert start(client, verification_id, phone_of(number))["status"] == "pending"
    return ids


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def claim(
    client: redis.Redis,
    verification_id: str,
    *,
    now: int,
    expected: int = 0,
    provider: str = PROVIDER,
    fail_max: int = FAIL_MAX,
    reset_ms: int = RESET_MS,
    lease_ms: int = LEASE_MS,
    cost_e4: int = COST_E4,
    budget_e4: int = 0,
    day: str = DAY,
    slow_ms: int = 0,
) -> list[str]:
    """flashcall_begin_attempt's answer: ['ok', admission] or [why not]."""
    guard = AdmissionGuard(
        reset_ms=reset_ms,
        lease_ms=lease_ms,
        fail_max=fail_max,
        cost_e4=cost_e4,
        budget_e4=budget_e4,
        day=day,
        slow_ms=slow_ms,
    )
    answer: list[str] = functions.begin_attempt(
        verification_id,
        expected_attempt=expected,
        now_ms=now,
        step=0,
        channel="flashcall",
        provider=provider,
        code_hash="",
        deadline_ms=now + lease_ms,
        guard=guard,
        provider_type="voicepassword",
    ).send(client)
    return answer


def admission(client: redis.Redis, verification_id: str, *, now: int, **guard: Any) -> str:
    """'closed', 'probe' or 'trial' when the claim succeeded; the refusal otherwise."""
    answer = claim(client, verification_id, now=now, **guard)
    return answer[1] if answer[0] == "ok" else answer[0]


def fail(
    client: redis.Redis,
    verification_id: str,
    *,
    now: int,
    attempt: int = 1,
    outcome: str = "provider_error",
    provider_fault: bool = True,
    latency_ms: int = 120,
) -> str:
    return functions.attempt_failed(
        verification_id,
        attempt=attempt,
        now_ms=now,
        outcome=outcome,
        error_code=outcome.upper(),
        state="failed",
        recovery_at_ms=now + 15_000,
        discard_code=True,
        provider_fault=provider_fault,
        latency_ms=latency_ms,
        no_money_ms=NO_MONEY_MS,
    ).run(client)


def deliver(
    client: redis.Redis,
    verification_id: str,
    *,
    now: int,
    attempt: int = 1,
    provider: str = PROVIDER,
    price_e4: int = COST_E4,
    latency_ms: int = 200,
    day: str = DAY,
) -> str:
    return functions.attempt_delivered(
        verification_id,
        attempt=attempt,
        now_ms=now,
        provider=provider,
        channel="flashcall",
        step=0,
        ref="ref-1",
        price_e4=price_e4,
        code_hash="",
        provider_checks=False,
        step_deadline_ms=0,
        latency_ms=latency_ms,
        day=day,
    ).run(client)


def breaker_fail(client: redis.Redis, *, now: int, provider: str = PROVIDER, fail_max: int = FAIL_MAX) -> int:
    return functions.breaker_fail(provider, fail_max=fail_max, now_ms=now).run(client)


def opened(client: redis.Redis, *, now: int, provider: str = PROVIDER) -> None:
    """fail_max failures recorded at `now`: the breaker is open from then on."""
    for _ in range(FAIL_MAX):
        breaker_fail(client, now=now, provider=provider)


def breaker(client: redis.Redis, provider: str = PROVIDER) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(keys.breaker(provider)))


def verification(client: redis.Redis, verification_id: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(keys.verification(verification_id)))


def events(client: redis.Redis, verification_id: str) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["id"] == verification_id]


def routing_state(client: redis.Redis, *providers: str, now: int, window_ms: int = 300_000) -> dict[str, Any]:
    return functions.routing_state(now_ms=now, window_ms=window_ms, day=DAY, providers=providers).run(client)


def no_money_key(provider: str = PROVIDER) -> str:
    return f"{keys.PREFIX}provider:{provider}:no_money"


def wait_until_gone(client: redis.Redis, key: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while client.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} still exists after {timeout} s")
        time.sleep(0.005)


# --- breaker admission ----------------------------------------------------------------


class TestBreakerAdmission:
    def test_a_closed_breaker_admits_the_call_as_closed(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)

        assert claim(library, v0, now=now_ms(library)) == ["ok", "closed"]

    def test_failures_below_fail_max_leave_the_breaker_closed(self, library: redis.Redis) -> None:
        now = now_ms(library)

        assert [breaker_fail(library, now=now) for _ in range(FAIL_MAX - 1)] == [1, 2]
        assert breaker(library)["failures"] == "2"
        assert "state" not in breaker(library)

    def test_fail_max_failures_open_the_breaker_at_that_time(self, library: redis.Redis) -> None:
        now = now_ms(library)
        opened(library, now=now)

        assert (breaker(library)["state"], breaker(library)["opened_at"]) == ("open", str(now))

    def test_an_open_breaker_refuses_the_claim_as_breaker_open(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        opened(library, now=now)

        assert claim(library, v0, now=now + RESET_MS - 1) == ["breaker_open"]

    def test_a_refused_claim_leaves_the_verification_without_an_attempt(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        opened(library, now=now)
        claim(library, v0, now=now)

        assert (verification(library, v0)["attempt"], verification(library, v0)["status"]) == ("0", "pending")
        assert [e["event"] for e in events(library, v0)] == ["created"]
        assert claim(library, v0, now=now, provider="other") == ["ok", "closed"]

    def test_an_open_breaker_leaves_other_providers_alone(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        opened(library, now=now)

        assert admission(library, v0, now=now, provider="other") == "closed"

    def test_after_the_reset_timeout_one_claim_gets_the_trial(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        opened(library, now=now)

        assert claim(library, v0, now=now + RESET_MS) == ["ok", "trial"]
        assert breaker(library)["state"] == "half-open"
        assert library.get(keys.breaker(PROVIDER) + ":trial") == "v0:1"

    def test_while_the_trial_is_out_a_second_claim_is_refused(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        opened(library, now=now)
        claim(library, v0, now=now + RESET_MS)

        assert claim(library, v1, now=now + RESET_MS + 1) == ["breaker_open"]

    def test_the_trial_lease_lapses_and_another_trial_may_go(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        opened(library, now=now)
        assert admission(library, v0, now=now + RESET_MS, lease_ms=50) == "trial"

        wait_until_gone(library, keys.breaker(PROVIDER) + ":trial")

        assert claim(library, v1, now=now + RESET_MS + 100) == ["ok", "trial"]
        assert library.get(keys.breaker(PROVIDER) + ":trial") == "v1:1"

    def test_many_claims_racing_for_the_trial_let_exactly_one_through(self, library: redis.Redis) -> None:
        ids = started(library, 20)
        now = now_ms(library)
        opened(library, now=now)

        answers = [admission(library, verification_id, now=now + RESET_MS) for verification_id in ids]

        assert answers.count("trial") == 1
        assert answers.count("breaker_open") == 19

    def test_closing_the_breaker_ends_its_trial_and_failures(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        opened(library, now=now)
        claim(library, v0, now=now + RESET_MS)

        functions.breaker_set(PROVIDER, "closed", now_ms=now + RESET_MS).run(library)

        assert (breaker(library)["state"], breaker(library)["failures"]) == ("closed", "0")
        assert not library.exists(keys.breaker(PROVIDER) + ":trial")
        assert admission(library, v1, now=now + RESET_MS) == "closed"

    def test_a_failed_trial_reopens_the_breaker_for_another_reset_timeout(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        opened(library, now=now)
        claim(library, v0, now=now + RESET_MS)

        functions.breaker_set(PROVIDER, "open", now_ms=now + RESET_MS + 500).run(library)

        assert not library.exists(keys.breaker(PROVIDER) + ":trial")
        assert admission(library, v1, now=now + 2 * RESET_MS) == "breaker_open"
        assert admission(library, v1, now=now + 2 * RESET_MS + 500) == "trial"


class TestSlowCalls:
    def test_calls_answered_in_time_are_not_held_back(self, library: redis.Redis) -> None:
        ids = started(library, 5)
        now = now_ms(library)

        answers = [admission(library, v, now=now + n * 100, slow_ms=2_000) for n, v in enumerate(ids)]

        assert answers == ["closed"] * 5

    def test_a_call_unanswered_for_slow_call_caps_calls_in_flight_at_fail_max(
        self, library: redis.Redis
    ) -> None:
        v0, v1, v2, v3 = started(library, 4)
        now = now_ms(library)
        claim(library, v0, now=now, slow_ms=2_000)
        claim(library, v1, now=now + 1_000, slow_ms=2_000)

        later = now + 2_500
        answers = [admission(library, v, now=later, slow_ms=2_000) for v in (v2, v3)]

        assert answers == ["closed", "breaker_open"]

    def test_once_the_slow_calls_come_back_calls_flow_again(self, library: redis.Redis) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        claim(library, v0, now=now, slow_ms=2_000)
        claim(library, v1, now=now, slow_ms=2_000)
        for answered in (v0, v1):
            deliver(library, answered, now=now + 2_500)

        assert admission(library, v2, now=now + 2_600, slow_ms=2_000) == "closed"


class TestProbingWhileFailing:
    def test_with_failures_counted_calls_are_admitted_as_probes(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        breaker_fail(library, now=now)

        assert claim(library, v0, now=now) == ["ok", "probe"]
        assert library.zscore(keys.breaker(PROVIDER) + ":probing", "v0:1") == now

    def test_failures_and_calls_in_flight_together_stay_below_fail_max(self, library: redis.Redis) -> None:
        ids = started(library, 4)
        now = now_ms(library)
        breaker_fail(library, now=now)

        answers = [admission(library, verification_id, now=now) for verification_id in ids]

        assert answers == ["probe", "probe", "breaker_open", "breaker_open"]

    def test_a_delivered_probe_frees_its_place(self, library: redis.Redis) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        breaker_fail(library, now=now)
        claim(library, v0, now=now)
        claim(library, v1, now=now)

        deliver(library, v0, now=now)

        assert admission(library, v2, now=now) == "probe"

    def test_a_failed_probe_frees_its_place_for_the_failure_it_became(self, library: redis.Redis) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        breaker_fail(library, now=now)
        claim(library, v0, now=now)
        claim(library, v1, now=now)

        fail(library, v0, now=now, outcome="busy", provider_fault=False)

        assert not library.zscore(keys.breaker(PROVIDER) + ":probing", "v0:1")
        assert admission(library, v2, now=now) == "probe"

    def test_a_probe_older_than_its_lease_holds_no_place(self, library: redis.Redis) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        breaker_fail(library, now=now)
        claim(library, v0, now=now)
        claim(library, v1, now=now)

        assert admission(library, v2, now=now + LEASE_MS + 1) == "probe"

    def test_the_failure_that_opens_the_breaker_drops_the_probes(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        breaker_fail(library, now=now)
        claim(library, v0, now=now)
        claim(library, v1, now=now)

        breaker_fail(library, now=now)
        breaker_fail(library, now=now)

        assert breaker(library)["state"] == "open"
        assert not library.exists(keys.breaker(PROVIDER) + ":probing")


# --- money and budget -----------------------------------------------------------------


class TestMoney:
    def test_not_enough_money_marks_the_provider_out_of_money(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)

        fail(library, v0, now=now, outcome="not_enough_money")

        assert 0 < library.pttl(no_money_key()) <= NO_MONEY_MS

    def test_a_provider_out_of_money_refuses_claims_as_no_money(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now)
        fail(library, v0, now=now, outcome="not_enough_money")

        assert claim(library, v1, now=now) == ["no_money"]
        assert admission(library, v1, now=now, provider="other") == "closed"

    @pytest.mark.parametrize("outcome", ["provider_error", "busy", "timeout", "refused"])
    def test_other_failures_leave_the_provider_in_rotation(self, library: redis.Redis, outcome: str) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)

        fail(library, v0, now=now, outcome=outcome, provider_fault=False)

        assert not library.exists(no_money_key())

    def test_a_step_settled_by_its_timer_marks_nothing(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)

        fail(library, v0, now=now, outcome="not_enough_money", latency_ms=-1)

        assert not library.exists(no_money_key())

    def test_a_positive_balance_puts_the_provider_back_in_rotation(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now)
        fail(library, v0, now=now, outcome="not_enough_money")

        functions.provider_balance(PROVIDER, balance=Decimal("12.50"), now_ms=now).run(library)

        assert not library.exists(no_money_key())
        assert admission(library, v1, now=now) == "closed"

    @pytest.mark.parametrize("balance", ["0", "0.00", "-3.20"])
    def test_a_balance_of_zero_or_less_keeps_it_out(self, library: redis.Redis, balance: str) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now)
        fail(library, v0, now=now, outcome="not_enough_money")

        functions.provider_balance(PROVIDER, balance=Decimal(balance), now_ms=now).run(library)

        assert claim(library, v1, now=now) == ["no_money"]

    def test_resetting_a_breaker_clears_its_out_of_money_mark(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now)
        fail(library, v0, now=now, outcome="not_enough_money")

        assert functions.breaker_reset([PROVIDER]).run(library) == 1

        assert admission(library, v1, now=now) == "closed"


class TestDailyBudget:
    def test_a_delivery_adds_its_price_to_the_days_spend(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)

        deliver(library, v0, now=now, price_e4=3700)

        assert library.get(f"{keys.PREFIX}spent:{PROVIDER}:{DAY}") == "3700"

    def test_a_days_spend_is_kept_two_days_from_its_first_call(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        for verification_id in (v0, v1):
            claim(library, verification_id, now=now)
            deliver(library, verification_id, now=now)

        assert 172_700 < library.ttl(f"{keys.PREFIX}spent:{PROVIDER}:{DAY}") <= 172_800

    def test_a_claim_that_would_overspend_the_budget_is_refused(self, library: redis.Redis) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        for verification_id in (v0, v1):
            claim(library, verification_id, now=now, budget_e4=10_000)
            deliver(library, verification_id, now=now)

        assert claim(library, v2, now=now, budget_e4=10_000) == ["budget_spent"]

    def test_a_claim_that_spends_the_budget_exactly_is_admitted(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now, budget_e4=7000)
        deliver(library, v0, now=now)

        assert admission(library, v1, now=now, budget_e4=7000) == "closed"

    def test_yesterdays_spend_does_not_count_today(self, library: redis.Redis) -> None:
        v0, v1 = started(library, 2)
        now = now_ms(library)
        claim(library, v0, now=now, budget_e4=3500, day="20261126")
        deliver(library, v0, now=now, day="20261126")

        assert admission(library, v1, now=now, budget_e4=3500, day=DAY) == "closed"

    def test_no_budget_means_no_limit(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        library.set(f"{keys.PREFIX}spent:{PROVIDER}:{DAY}", 10**9)

        assert admission(library, v0, now=now_ms(library), budget_e4=0) == "closed"


# --- the routing state ----------------------------------------------------------------


class TestRoutingState:
    def test_an_untouched_provider_is_closed_in_rotation_with_no_data(self, library: redis.Redis) -> None:
        now = now_ms(library)

        assert routing_state(library, PROVIDER, now=now) == {
            PROVIDER: {
                "breaker": "closed",
                "failures": 0,
                "opened_at": 0,
                "no_money_ms": -2,
                "spent_e4": 0,
                "balance": "",
                "balance_at": 0,
                "health": {
                    channel: {"ok": 0, "fail": 0, "ms": 0} for channel in ("flashcall", "voice", "sms")
                },
            }
        }

    def test_it_reports_the_breaker_its_failures_and_when_it_opened(self, library: redis.Redis) -> None:
        now = now_ms(library)
        opened(library, now=now)

        reported = routing_state(library, PROVIDER, now=now)[PROVIDER]

        assert (reported["breaker"], reported["failures"], reported["opened_at"]) == ("open", FAIL_MAX, now)

    def test_it_reports_the_out_of_money_mark_and_the_balance(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)
        fail(library, v0, now=now, outcome="not_enough_money")
        functions.provider_balance(PROVIDER, balance=Decimal("0.00"), now_ms=now).run(library)

        reported = routing_state(library, PROVIDER, now=now)[PROVIDER]

        assert 0 < reported["no_money_ms"] <= NO_MONEY_MS
        assert (reported["balance"], reported["balance_at"]) == ("0.00", now)

    def test_it_reports_todays_spend(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)
        deliver(library, v0, now=now, price_e4=4200)

        assert routing_state(library, PROVIDER, now=now)[PROVIDER]["spent_e4"] == 4200

    def test_it_counts_health_per_channel_from_deliveries_and_provider_faults(
        self, library: redis.Redis
    ) -> None:
        v0, v1, v2 = started(library, 3)
        now = now_ms(library)
        claim(library, v0, now=now)
        deliver(library, v0, now=now, latency_ms=300)
        claim(library, v1, now=now)
        fail(library, v1, now=now, outcome="timeout", latency_ms=2000)
        claim(library, v2, now=now)
        fail(library, v2, now=now, outcome="busy", provider_fault=False, latency_ms=100)

        reported = routing_state(library, PROVIDER, now=now)[PROVIDER]["health"]

        assert reported["flashcall"] == {"ok": 2, "fail": 1, "ms": 2400}
        assert reported["voice"] == {"ok": 0, "fail": 0, "ms": 0}

    def test_health_older_than_the_window_is_left_out(self, library: redis.Redis) -> None:
        [v0] = started(library, 1)
        now = now_ms(library)
        claim(library, v0, now=now)
        deliver(library, v0, now=now)

        later = routing_state(library, PROVIDER, now=now + 120_000, window_ms=60_000)[PROVIDER]

        assert later["health"]["flashcall"] == {"ok": 0, "fail": 0, "ms": 0}

    def test_it_answers_for_every_provider_named(self, library: redis.Redis) -> None:
        now = now_ms(library)
        opened(library, now=now, provider="a")

        reported = routing_state(library, "a", "b", now=now)

        assert {name: state["breaker"] for name, state in reported.items()} == {"a": "open", "b": "closed"}


# --- per-number limits ----------------------------------------------------------------


def publish_limits(client: redis.Redis, *rules: tuple[int, int]) -> None:
    functions.publish_config(PublishedConfig(policies=("default",), per_phone=rules)).run(client)


def queued_ids(client: redis.Redis) -> list[str]:
    ids = cast(list[str], client.lrange(keys.queue(keys.VERIFY_QUEUE), 0, -1))
    bodies = cast(list[str], client.hmget(keys.queue_messages(keys.VERIFY_QUEUE), ids)) if ids else []
    return [json.loads(body)["args"][0] for body in bodies]


class TestPerNumberLimits:
    def test_a_second_start_of_a_number_within_two_minutes_fails_as_rate_limited(
        self, library: redis.Redis
    ) -> None:
        start(library, "first")

        answer = start(library, "second")

        assert (answer["status"], answer["reason"], answer["created"]) == ("failed", "rate_limited", True)
        assert 119 <= answer["retry_after"] <= 120

    def test_a_rate_limited_start_is_recorded_as_failed(self, library: redis.Redis) -> None:
        start(library, "first")
        start(library, "second")

        status = functions.status("second").run(library)

        assert (status["status"], status["reason"]) == ("failed", "rate_limited")

    def test_a_rate_limited_start_writes_one_failed_event(self, library: redis.Redis) -> None:
        start(library, "first")
        start(library, "second")

        trail = events(library, "second")

        assert [(e["event"], e["reason"]) for e in trail] == [("failed", "rate_limited")]

    def test_a_rate_limited_start_enqueues_nothing_and_sets_no_timer(self, library: redis.Redis) -> None:
        start(library, "first")
        start(library, "second")

        assert queued_ids(library) == ["first"]
        assert library.zscore(keys.PREFIX + "timers:step", "second") is None
        assert library.zscore(keys.PREFIX + "timers:expire", "second") is None

    def test_another_number_may_start_at_once(self, library: redis.Redis) -> None:
        start(library, "first", "+79991230000")

        assert start(library, "second", "+79991230001")["status"] == "pending"

    def test_the_same_number_written_differently_is_the_same_number(self, library: redis.Redis) -> None:
        start(library, "first", "+79991230000")

        assert start(library, "second", "8 (999) 123-00-00")["reason"] == "rate_limited"

    def test_published_limits_replace_the_defaults(self, library: redis.Redis) -> None:
        publish_limits(library, (3, 60_000))

        answers = [start(library, f"start-{n}")["status"] for n in range(4)]

        assert answers == ["pending", "pending", "pending", "failed"]

    def test_publishing_no_limits_lets_a_number_start_freely(self, library: redis.Redis) -> None:
        publish_limits(library)

        assert [start(library, f"start-{n}")["status"] for n in range(5)] == ["pending"] * 5

    def test_retry_after_counts_from_the_oldest_start_in_the_window(self, library: redis.Redis) -> None:
        publish_limits(library, (2, 60_000))
        start(library, "start-0")
        start(library, "start-1")

        assert 59 <= start(library, "start-2")["retry_after"] <= 60

    def test_every_published_window_is_enforced(self, library: redis.Redis) -> None:
        publish_limits(library, (5, 60_000), (2, 3_600_000))
        start(library, "start-0")
        start(library, "start-1")

        answer = start(library, "start-2")

        assert answer["reason"] == "rate_limited"
        assert 3599 <= answer["retry_after"] <= 3600

    def test_starts_older_than_the_longest_window_are_forgotten_at_the_next_start(
        self, library: redis.Redis
    ) -> None:
        publish_limits(library, (1, 60_000), (2, 3_600_000))
        seconds, _ = library.time()
        library.zadd(keys.PREFIX + "phone:79991230000", {"long-ago": (int(seconds) - 3_700) * 1000})

        assert start(library, "first")["status"] == "pending"
        assert library.zrange(keys.PREFIX + "phone:79991230000", 0, -1) == ["first"]

    def test_a_start_in_the_longest_window_still_counts(self, library: redis.Redis) -> None:
        publish_limits(library, (1, 60_000), (2, 3_600_000))
        seconds, _ = library.time()
        library.zadd(keys.PREFIX + "phone:79991230000", {"an-hour-ago": (int(seconds) - 3_000) * 1000})
        start(library, "first")

        answer = start(library, "second", "+79991230000")

        assert answer["reason"] == "rate_limited"
        assert 590 <= answer["retry_after"] <= 600

    def test_a_repeated_start_of_the_same_id_is_not_counted(self, library: redis.Redis) -> None:
        publish_limits(library, (2, 60_000))
        start(library, "first")

        assert start(library, "first") == {"id": "first", "status": "pending", "created": False}
        assert start(library, "second")["status"] == "pending"
        assert library.zcard(keys.PREFIX + "phone:79991230000") == 2

    def test_a_repeated_rate_limited_start_answers_the_same_without_counting(
        self, library: redis.Redis
    ) -> None:
        start(library, "first")
        start(library, "second")

        assert start(library, "second") == {
            "id": "second",
            "status": "failed",
            "reason": "rate_limited",
            "created": False,
        }
        assert library.zcard(keys.PREFIX + "phone:79991230000") == 1
