"""`worker.routing.breakers.Breakers`: pybreaker's model over the flashcall library in a real
Redis (the `library` fixture's server, with a synchronous client as a worker builds it).

A call's result is recorded under the admission `flashcall_begin_attempt` gave it ('closed',
'probe' or 'trial'); the half-open trial is admitted here the way a worker gets it, by
claiming an attempt once the reset timeout is over. Two `Breakers` on one Redis stand for
two worker processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from structlog.testing import capture_logs

from flashcall_dev.stack import redis_server
from worker.core import keys
from worker.core.verification import Outcome
from worker.providers.base import CodeCheck, SendResult
from worker.redis import functions
from worker.redis.functions import AdmissionGuard
from worker.routing.breakers import Breakers
from worker.routing.config import BreakerConfig

pytestmark = pytest.mark.integration

NAME = "vp-breaker"
FAIL_MAX = 3
RESET_TIMEOUT = 30.0
CONFIGS = {NAME: BreakerConfig(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)}

FAULT = SendResult(Outcome.PROVIDER_ERROR, error_code="http_503", breaker_failure=True)
TIMEOUT = SendResult(Outcome.TIMEOUT, error_code="timeout", breaker_failure=True, uncertain=True)
BAD_NUMBER = SendResult(Outcome.BAD_NUMBER, error_code="number_is_empty", breaker_failure=False)
REFUSED = SendResult(Outcome.REFUSED, error_code="number_in_spam_list", breaker_failure=False)
DELIVERED = SendResult(Outcome.DELIVERED, ref="1")


@pytest.fixture
def client(library: redis.Redis) -> Iterator[redis.Redis]:
    """A client like the one a worker gives its breakers: synchronous, decoding answers."""
    connection = library.connection_pool.connection_kwargs
    breaker_client = redis.Redis(host=connection["host"], port=connection["port"], decode_responses=True)
    yield breaker_client
    breaker_client.close()


def record(breakers: Breakers, admission: str, result: SendResult | CodeCheck, name: str = NAME) -> None:
    asyncio.run(breakers.record(name, admission, result))


def failures(breakers: Breakers, count: int) -> None:
    """`count` provider faults in a row, admitted as a worker's calls would be."""
    for number in range(count):
        record(breakers, "closed" if number == 0 else "probe", FAULT)


def stored(client: redis.Redis) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(keys.breaker(NAME)))


def trial_admitted(client: redis.Redis) -> None:
    """Claim an attempt once the reset timeout is over, as a worker does: the trial."""
    functions.start(json.dumps({"id": "trial-call", "phone": "+79991234567"})).run(client)
    due = int(stored(client)["opened_at"]) + int(RESET_TIMEOUT * 1000)
    guard = AdmissionGuard(
        reset_ms=int(RESET_TIMEOUT * 1000),
        lease_ms=15_000,
        fail_max=FAIL_MAX,
        cost_e4=3500,
        budget_e4=0,
        day="20261127",
    )
    answer = functions.begin_attempt(
        "trial-call",
        expected_attempt=0,
        now_ms=due,
        step=0,
        channel="flashcall",
        provider=NAME,
        code_hash="",
        deadline_ms=due + 15_000,
        guard=guard,
    ).send(client)
    assert answer == ["ok", "trial"]


# --- opening --------------------------------------------------------------------------


def test_fail_max_provider_faults_open_the_breaker(client: redis.Redis) -> None:
    failures(Breakers(client, CONFIGS), FAIL_MAX)

    assert stored(client)["state"] == "open"
    assert int(stored(client)["opened_at"]) > 0


def test_fewer_faults_than_fail_max_leave_it_closed_with_the_count(client: redis.Redis) -> None:
    failures(Breakers(client, CONFIGS), FAIL_MAX - 1)

    assert (stored(client).get("state", "closed"), stored(client)["failures"]) == ("closed", "2")


def test_timeouts_count_like_any_provider_fault(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    record(breakers, "closed", TIMEOUT)
    record(breakers, "probe", FAULT)
    record(breakers, "probe", TIMEOUT)

    assert stored(client)["state"] == "open"


def test_faults_recorded_by_two_processes_add_up_to_open_it(client: redis.Redis) -> None:
    first, second = Breakers(client, CONFIGS), Breakers(client, CONFIGS)
    record(first, "closed", FAULT)
    record(second, "probe", FAULT)
    record(first, "probe", FAULT)

    assert stored(client)["state"] == "open"


def test_opening_is_logged_with_the_provider_and_both_states(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    with capture_logs() as logs:
        failures(breakers, FAIL_MAX)

    changes = [entry for entry in logs if entry["event"] == "circuit breaker changed state"]
    assert [(c["provider"], c["old_state"], c["new_state"], c["log_level"]) for c in changes] == [
        (NAME, "closed", "open", "warning")
    ]


def test_a_bad_number_never_counts_as_a_failure(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX - 1)

    for _ in range(FAIL_MAX):
        record(breakers, "probe", BAD_NUMBER)

    assert stored(client).get("state", "closed") == "closed"
    assert int(stored(client)["failures"]) < FAIL_MAX


def test_bad_numbers_alone_leave_no_breaker_state_at_all(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)

    for _ in range(FAIL_MAX + 1):
        record(breakers, "closed", BAD_NUMBER)
        record(breakers, "closed", REFUSED)

    assert not client.exists(keys.breaker(NAME))


def test_a_code_check_the_provider_could_not_answer_counts(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)

    for _ in range(FAIL_MAX):
        record(
            breakers, "closed", CodeCheck(matched=False, error_code="invalid_client", breaker_failure=True)
        )

    assert stored(client)["state"] == "open"


def test_a_wrong_code_never_counts(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)

    for _ in range(FAIL_MAX):
        record(breakers, "closed", CodeCheck(matched=False, error_code="invalid_code"))

    assert not client.exists(keys.breaker(NAME))


def test_a_success_while_failing_clears_the_failures(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX - 1)

    record(breakers, "probe", DELIVERED)

    assert stored(client)["failures"] == "0"


def test_a_provider_not_in_the_configuration_is_ignored(client: redis.Redis) -> None:
    record(Breakers(client, CONFIGS), "closed", FAULT, name="elsewhere")

    assert not client.exists(keys.breaker("elsewhere"))


# --- half-open ------------------------------------------------------------------------


def test_a_successful_trial_closes_the_breaker(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX)
    trial_admitted(client)

    record(breakers, "trial", DELIVERED)

    assert (stored(client)["state"], stored(client)["failures"]) == ("closed", "0")
    assert not client.exists(keys.breaker(NAME) + ":trial")


def test_a_trial_that_fails_opens_the_breaker_again_from_now(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX)
    first_opened = int(stored(client)["opened_at"])
    client.hset(keys.breaker(NAME), "opened_at", first_opened - int(RESET_TIMEOUT * 1000))
    trial_admitted(client)

    record(breakers, "trial", FAULT)

    assert stored(client)["state"] == "open"
    assert int(stored(client)["opened_at"]) >= first_opened
    assert not client.exists(keys.breaker(NAME) + ":trial")


def test_a_trial_made_by_another_process_closes_the_breaker_for_all(client: redis.Redis) -> None:
    opener, trier = Breakers(client, CONFIGS), Breakers(client, CONFIGS)
    failures(opener, FAIL_MAX)
    trial_admitted(client)

    record(trier, "trial", DELIVERED)

    assert stored(client)["state"] == "closed"


def test_recovery_through_a_trial_is_logged(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX)
    trial_admitted(client)

    with capture_logs() as logs:
        record(breakers, "trial", DELIVERED)

    changes = [
        (e["old_state"], e["new_state"]) for e in logs if e["event"] == "circuit breaker changed state"
    ]
    assert changes == [("open", "half-open"), ("half-open", "closed")]


# --- results that arrive late ---------------------------------------------------------


def test_a_late_failure_admitted_while_closed_is_ignored_once_the_breaker_opened(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX)
    before = stored(client)

    record(breakers, "closed", FAULT)
    record(Breakers(client, CONFIGS), "probe", FAULT)

    assert stored(client) == before


def test_a_late_trial_result_after_the_breaker_was_reset_is_ignored(client: redis.Redis) -> None:
    breakers = Breakers(client, CONFIGS)
    failures(breakers, FAIL_MAX)
    trial_admitted(client)
    functions.breaker_reset([NAME]).run(client)

    record(breakers, "trial", FAULT)

    assert not client.exists(keys.breaker(NAME))


def test_failures_after_a_recovery_count_across_processes(client: redis.Redis) -> None:
    opener, trier = Breakers(client, CONFIGS), Breakers(client, CONFIGS)
    failures(opener, FAIL_MAX)
    trial_admitted(client)
    record(trier, "trial", DELIVERED)

    record(trier, "closed", FAULT)
    record(opener, "probe", FAULT)
    record(opener, "probe", FAULT)

    assert stored(client)["state"] == "open"


# --- Redis away ---------------------------------------------------------------------------


def test_with_redis_unreachable_a_result_is_logged_and_neither_opens_nor_raises(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=0.2)
        breakers = Breakers(client, CONFIGS)
    with capture_logs() as logs:
        for _ in range(FAIL_MAX):
            record(breakers, "closed", FAULT)
    told = [entry for entry in logs if entry["event"] == "breaker not told of a result: Redis unreachable"]
    assert len(told) == FAIL_MAX
