"""The flashcall Redis library on its own: the producer contract and the state transitions.

These tests run against a redis-server of their own with no worker, calling the
library's functions the way producers and workers do; the workers' functions take the
clock as an argument, so expiry and deadlines are tested without waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from worker.core import keys
from worker.redis import functions
from worker.redis.functions import AdmissionGuard, PublishedConfig
from worker.redis.store import Store

pytestmark = pytest.mark.integration

PHONE = "79991234567"
HOUR_MS = 3_600_000
DAY = "20261127"


def _named(function: Callable[..., Any]) -> str:
    return function.__name__


def start(client: redis.Redis, **fields: Any) -> dict[str, Any]:
    request = {"id": "order-42", "phone": "+" + PHONE, **fields}
    answer: dict[str, Any] = functions.start(json.dumps(request)).run(client)
    return answer


def queued(client: redis.Redis, queue: str = keys.VERIFY_QUEUE) -> list[dict[str, Any]]:
    ids = cast(list[str], client.lrange(keys.queue(queue), 0, -1))
    bodies = cast(list[str], client.hmget(keys.queue_messages(queue), ids)) if ids else []
    return [json.loads(body) for body in bodies]


def events(client: redis.Redis, verification_id: str = "order-42") -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["id"] == verification_id]


def state(client: redis.Redis, verification_id: str = "order-42") -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(keys.verification(verification_id)))


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def claim(
    client: redis.Redis,
    expected: int = 0,
    *,
    now: int,
    provider: str = "vp",
    step: int = 0,
    code_hash: str = "",
    verification_id: str = "order-42",
    fail_max: int = 5,
    reset_ms: int = 30_000,
    cost_e4: int = 3500,
    budget_e4: int = 0,
) -> list[str]:
    """flashcall_begin_attempt's whole answer: ['ok', admission] or [why not]."""
    answer: list[str] = functions.begin_attempt(
        verification_id,
        expected_attempt=expected,
        now_ms=now,
        step=step,
        channel="flashcall",
        provider=provider,
        code_hash=code_hash,
        deadline_ms=now + 30_000,
        guard=AdmissionGuard(
            reset_ms=reset_ms,
            lease_ms=30_000,
            fail_max=fail_max,
            cost_e4=cost_e4,
            budget_e4=budget_e4,
            day=DAY,
        ),
    ).send(client)
    return answer


def begin(
    client: redis.Redis,
    expected: int = 0,
    *,
    now: int,
    provider: str = "vp",
    step: int = 0,
    code_hash: str = "",
) -> str:
    """'ok', or why the attempt was not claimed."""
    return claim(client, expected, now=now, provider=provider, step=step, code_hash=code_hash)[0]


def fail(
    client: redis.Redis,
    attempt: int = 1,
    *,
    now: int,
    outcome: str = "busy",
    error_code: str = "BUSY",
    state: str = "failed",
    recovery_at: int | None = None,
    discard_code: bool = False,
    provider_fault: bool = False,
    latency_ms: int = 100,
    verification_id: str = "order-42",
) -> str:
    return functions.attempt_failed(
        verification_id,
        attempt=attempt,
        now_ms=now,
        outcome=outcome,
        error_code=error_code,
        state=state,
        recovery_at_ms=now + 1 if recovery_at is None else recovery_at,
        discard_code=discard_code,
        provider_fault=provider_fault,
        latency_ms=latency_ms,
        no_money_ms=600_000,
    ).run(client)


def deliver(
    client: redis.Redis,
    attempt: int = 1,
    *,
    now: int,
    price_e4: int = 3500,
    deadline: int = 0,
    provider: str = "vp",
    verification_id: str = "order-42",
    latency_ms: int = 100,
    provider_checks: bool = False,
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
        provider_checks=provider_checks,
        step_deadline_ms=deadline,
        latency_ms=latency_ms,
        day=DAY,
    ).run(client)


def give_up(client: redis.Redis, attempt: int, *, now: int, reason: str, hard: bool = False) -> str:
    return functions.give_up("order-42", attempt=attempt, now_ms=now, reason=reason, hard=hard).run(client)


class TestStart:
    def test_a_start_creates_a_pending_verification(self, library: redis.Redis) -> None:
        assert start(library) == {"id": "order-42", "status": "pending", "created": True}
        assert state(library)["status"] == "pending"
        assert state(library)["phone"] == PHONE

    def test_a_start_enqueues_one_advance_message_for_the_workers(self, library: redis.Redis) -> None:
        start(library)
        [message] = queued(library)
        assert message["actor_name"] == "advance"
        assert message["args"][:3] == ["order-42", 0, "start"]

    def test_the_first_advance_carries_what_the_first_attempt_needs(self, library: redis.Redis) -> None:
        start(library, channels=["voice", "sms"], code_length=6, ttl=120)
        [message] = queued(library)
        expires_at = int(state(library)["expires_at"])
        assert message["args"][3] == {
            "phone": PHONE,
            "policy": "default",
            "channels": "voice,sms",
            "code_length": 6,
            "expires_at": expires_at,
        }
        assert message["queue_name"] == keys.VERIFY_QUEUE
        assert message["options"]["redis_message_id"] == library.lindex(keys.queue(keys.VERIFY_QUEUE), 0)

    def test_the_wake_list_is_trimmed_back_to_16_tokens_past_32(self, library: redis.Redis) -> None:
        for number in range(32):
            start(library, id=f"order-{number}", phone=f"+7999000{number:04d}")
        assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 32
        start(library, id="order-32", phone="+79990000032")
        assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 16

    def test_a_start_wakes_idle_workers(self, library: redis.Redis) -> None:
        start(library)
        assert library.llen(keys.wake(keys.VERIFY_QUEUE)) == 1

    def test_a_start_writes_a_created_event_with_the_producers_metadata(self, library: redis.Redis) -> None:
        start(library, metadata={"user": 7})
        [created] = events(library)
        assert created["event"] == "created"
        assert json.loads(created["metadata"]) == {"user": 7}

    def test_a_start_sets_the_expiry_and_a_recovery_timer(self, library: redis.Redis) -> None:
        start(library, ttl=120)
        expires_at = int(state(library)["expires_at"])
        assert library.zscore(keys.PREFIX + "timers:expire", "order-42") == expires_at
        assert library.zscore(keys.PREFIX + "timers:step", "order-42") is not None
        assert int(state(library)["created_at"]) + 120_000 == expires_at

    @pytest.mark.parametrize("phone", ["+79991234567", "79991234567", "89991234567", "+7 (999) 123-45-67"])
    def test_the_phone_is_stored_in_one_normal_form(self, library: redis.Redis, phone: str) -> None:
        start(library, phone=phone)
        assert state(library)["phone"] == PHONE

    def test_starting_the_same_id_again_enqueues_nothing_more(self, library: redis.Redis) -> None:
        start(library)
        assert start(library) == {"id": "order-42", "status": "pending", "created": False}
        assert len(queued(library)) == 1
        assert [e["event"] for e in events(library)] == ["created"]

    def test_starting_the_same_id_for_another_phone_is_refused(self, library: redis.Redis) -> None:
        start(library)
        with pytest.raises(redis.ResponseError, match="already used by a verification of another phone"):
            start(library, phone="+79997654321")
        assert state(library)["phone"] == PHONE

    def test_the_defaults_are_four_digits_ten_minutes_and_the_default_policy(
        self, library: redis.Redis
    ) -> None:
        start(library)
        v = state(library)
        assert (v["code_length"], v["ttl"], v["policy"], v["max_checks"]) == ("4", "600", "default", "3")

    def test_a_repeated_start_after_the_lifetime_answers_expired(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        library.hset(keys.verification("order-42"), "expires_at", now_ms(library) - 1)
        assert start(library) == {"id": "order-42", "status": "expired", "created": False}

    def test_the_created_event_carries_the_client_ip(self, library: redis.Redis) -> None:
        start(library, client_ip="203.0.113.7")
        assert events(library)[0]["client_ip"] == "203.0.113.7"

    @pytest.mark.parametrize(
        "address", ["203.0.113.7", "2001:db8::1", "::1", "::ffff:192.0.2.1", "1:2:3:4:5:6:7:8"]
    )
    def test_ipv4_and_ipv6_client_addresses_are_accepted(self, library: redis.Redis, address: str) -> None:
        assert start(library, client_ip=address)["created"] is True

    def test_a_policy_not_published_by_the_workers_is_refused(self, library: redis.Redis) -> None:
        config = PublishedConfig(policies=("default", "voice_first"), per_phone=())
        functions.publish_config(config).run(library)
        with pytest.raises(redis.ResponseError, match="unknown policy 'vip'"):
            start(library, policy="vip")
        assert start(library, policy="voice_first")["created"] is True


MALFORMED: list[tuple[str, str, str]] = [
    ("not JSON", "hello", "request is not a JSON object"),
    ("a JSON array", "[1, 2]", "request is not a JSON object"),
    ("a JSON string", '"x"', "request is not a JSON object"),
    ("an empty argument", "", "expected one argument: a JSON object"),
    (
        "oversized",
        json.dumps({"id": "a", "phone": PHONE, "metadata": {"x": "y" * 5000}}),
        "the limit is 4096",
    ),
    ("unknown field", json.dumps({"id": "a", "phone": PHONE, "callback": "x"}), "unknown field 'callback'"),
    (
        "an unknown field named with control characters",
        json.dumps({"id": "a", "phone": PHONE, "\u0000x\n": 1}),
        "unknown field '\\u0000x\\u000a'",
    ),
    ("no id", json.dumps({"phone": PHONE}), "'id' is required"),
    ("numeric id", json.dumps({"id": 42, "phone": PHONE}), "'id' is required and must be a string"),
    ("id with spaces", json.dumps({"id": "a b", "phone": PHONE}), "'id' must be 1 to 128 characters"),
    ("id too long", json.dumps({"id": "a" * 129, "phone": PHONE}), "'id' must be 1 to 128 characters"),
    ("empty id", json.dumps({"id": "", "phone": PHONE}), "'id' must be 1 to 128 characters"),
    ("no phone", json.dumps({"id": "a"}), "'phone' is required"),
    (
        "numeric phone",
        json.dumps({"id": "a", "phone": 79991234567}),
        "'phone' is required and must be a string",
    ),
    ("short phone", json.dumps({"id": "a", "phone": "+7999123"}), "'phone' must be a Russian number"),
    ("foreign phone", json.dumps({"id": "a", "phone": "+380991234567"}), "'phone' must be a Russian number"),
    (
        "policy not a name",
        json.dumps({"id": "a", "phone": PHONE, "policy": "a b"}),
        "'policy' must be a policy",
    ),
    ("channels not a list", json.dumps({"id": "a", "phone": PHONE, "channels": "sms"}), "'channels' must be"),
    (
        "no channels",
        json.dumps({"id": "a", "phone": PHONE, "channels": []}),
        "'channels' must be a non-empty",
    ),
    ("unknown channel", json.dumps({"id": "a", "phone": PHONE, "channels": ["fax"]}), "may hold only"),
    (
        "a channel twice",
        json.dumps({"id": "a", "phone": PHONE, "channels": ["sms", "sms"]}),
        "names sms twice",
    ),
    ("code_length string", json.dumps({"id": "a", "phone": PHONE, "code_length": "4"}), "'code_length' must"),
    ("code_length 7", json.dumps({"id": "a", "phone": PHONE, "code_length": 7}), "from 4 to 6"),
    ("code_length 4.5", json.dumps({"id": "a", "phone": PHONE, "code_length": 4.5}), "'code_length' must"),
    ("ttl too short", json.dumps({"id": "a", "phone": PHONE, "ttl": 5}), "'ttl' must be an integer from 30"),
    ("ttl too long", json.dumps({"id": "a", "phone": PHONE, "ttl": 86401}), "'ttl' must be an integer"),
    ("client_ip junk", json.dumps({"id": "a", "phone": PHONE, "client_ip": "evil.example"}), "'client_ip'"),
    ("client_ip hex word", json.dumps({"id": "a", "phone": PHONE, "client_ip": "abc"}), "'client_ip'"),
    ("client_ip colons", json.dumps({"id": "a", "phone": PHONE, "client_ip": ":::"}), "'client_ip'"),
    ("client_ip octet", json.dumps({"id": "a", "phone": PHONE, "client_ip": "1.2.3.256"}), "'client_ip'"),
    ("client_ip two ::", json.dumps({"id": "a", "phone": PHONE, "client_ip": "1::2::3"}), "'client_ip'"),
    ("metadata a list", json.dumps({"id": "a", "phone": PHONE, "metadata": [1]}), "'metadata' must be"),
    ("metadata a string", json.dumps({"id": "a", "phone": PHONE, "metadata": "x"}), "'metadata' must be"),
    (
        "metadata too big",
        json.dumps({"id": "a", "phone": PHONE, "metadata": {"x": "y" * 1100}}),
        "the limit is 1024",
    ),
]


class TestMalformedStart:
    @pytest.mark.parametrize(
        ("payload", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
    )
    def test_is_refused_with_a_clear_error(self, library: redis.Redis, payload: str, message: str) -> None:
        with pytest.raises(redis.ResponseError, match=r"^flashcall: ") as refused:
            functions.start(payload).run(library)
        assert message in str(refused.value)

    @pytest.mark.parametrize("payload", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
    def test_stores_and_enqueues_nothing(self, library: redis.Redis, payload: str) -> None:
        with pytest.raises(redis.ResponseError):
            functions.start(payload).run(library)
        assert library.dbsize() == 0


class TestCheck:
    def check(self, client: redis.Redis, code: str = "1234", verification_id: str = "order-42") -> str:
        return functions.check(json.dumps({"id": verification_id, "code": code})).run(client)

    def apply_check(self, client: redis.Redis, proof: str, reply_key: str) -> str | functions.AskProvider:
        """The worker's verdict (or the typed code's hashes) on the check answered on `reply_key`."""
        return functions.apply_check("order-42", proof=proof, reply_key=reply_key, now_ms=now_ms(client)).run(
            client
        )

    def answer(self, client: redis.Redis, reply_key: str) -> dict[str, Any]:
        popped = client.blpop([reply_key], 1)
        assert popped is not None, "no answer on the reply key"
        result: dict[str, Any] = json.loads(popped[1])
        return result

    def test_an_unknown_id_is_answered_not_found_at_once(self, library: redis.Redis) -> None:
        reply_key = self.check(library, verification_id="nobody")
        assert self.answer(library, reply_key) == {"id": "nobody", "result": "not_found"}
        assert library.llen(keys.queue(keys.CHECK_QUEUE)) == 0

    def test_a_check_goes_to_the_check_queue_with_its_reply_key(self, library: redis.Redis) -> None:
        start(library)
        reply_key = self.check(library, "5678")
        [message] = queued(library, keys.CHECK_QUEUE)
        assert message["actor_name"] == "check_code"
        assert message["args"] == ["order-42", "5678", reply_key]
        assert library.llen(keys.wake(keys.CHECK_QUEUE)) == 1

    def test_a_check_reserves_one_of_the_attempts(self, library: redis.Redis) -> None:
        start(library)
        self.check(library)
        assert state(library)["checks"] == "1"

    def test_a_fourth_check_is_answered_max_attempts_without_comparing(self, library: redis.Redis) -> None:
        start(library)
        for _ in range(3):
            self.check(library)
        reply_key = self.check(library)
        assert self.answer(library, reply_key)["result"] == "max_attempts"
        assert len(queued(library, keys.CHECK_QUEUE)) == 3

    @pytest.mark.parametrize("code", ["12", "123456789", "12a4", ""])
    def test_a_code_that_is_not_4_to_8_digits_is_refused(self, library: redis.Redis, code: str) -> None:
        start(library)
        with pytest.raises(redis.ResponseError, match="'code' is required"):
            self.check(library, code)

    def test_a_check_after_the_lifetime_answers_expired(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        library.hset(keys.verification("order-42"), "expires_at", now_ms(library) - 1)
        assert self.answer(library, self.check(library))["result"] == "expired"
        assert state(library)["status"] == "expired"

    def test_a_check_of_a_canceled_verification_answers_canceled(self, library: redis.Redis) -> None:
        start(library)
        functions.cancel("order-42").run(library)
        assert self.answer(library, self.check(library))["result"] == "canceled"

    def test_a_matching_code_approves(self, library: redis.Redis) -> None:
        start(library)
        reply_key = self.check(library)
        assert self.apply_check(library, "1", reply_key) == "approved"
        assert self.answer(library, reply_key)["result"] == "approved"
        assert state(library)["status"] == "approved"
        assert events(library)[-1]["event"] == "approved"

    def test_approval_clears_the_verifications_timers(self, library: redis.Redis) -> None:
        start(library)
        self.apply_check(library, "1", self.check(library))
        assert library.zscore(keys.PREFIX + "timers:expire", "order-42") is None
        assert library.zscore(keys.PREFIX + "timers:step", "order-42") is None

    def test_approval_clears_a_poll_timer_the_delivery_set(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        functions.attempt_delivered(
            "order-42", attempt=1, now_ms=now, provider="vp", channel="flashcall", step=0, ref="ref-1",
            price_e4=3500, code_hash="", provider_checks=False, step_deadline_ms=0, latency_ms=100, day=DAY,
            poll_at_ms=now + 5_000,
        ).run(library)  # fmt: skip
        assert library.zscore(keys.PREFIX + "timers:poll", "order-42") == now + 5_000
        self.apply_check(library, "1", self.check(library))
        assert library.zscore(keys.PREFIX + "timers:poll", "order-42") is None

    def test_approval_clears_the_poll_timer_of_a_verification_from_library_11(
        self, library: redis.Redis
    ) -> None:
        # Library 11 kept no mark of whether a poll timer was set: one may be.
        start(library)
        library.hdel(keys.verification("order-42"), "poll_timer")
        library.zadd(keys.PREFIX + "timers:poll", {"order-42": now_ms(library) + 5_000})
        self.apply_check(library, "1", self.check(library))
        assert library.zscore(keys.PREFIX + "timers:poll", "order-42") is None

    def test_a_wrong_code_is_rejected_with_the_attempts_left(self, library: redis.Redis) -> None:
        start(library)
        reply_key = self.check(library)
        self.apply_check(library, "0", reply_key)
        assert self.answer(library, reply_key) == {
            "id": "order-42",
            "result": "rejected",
            "attempts_left": 2,
            "status": "pending",
        }
        assert events(library)[-1]["event"] == "rejected"

    def test_the_third_wrong_code_ends_the_verification_as_max_attempts(self, library: redis.Redis) -> None:
        start(library)
        for _ in range(3):
            reply_key = self.check(library)
            self.apply_check(library, "0", reply_key)
        assert self.answer(library, reply_key)["result"] == "max_attempts"
        assert state(library)["status"] == "max_attempts"

    def test_a_wrong_code_compared_while_more_checks_wait_leaves_them_their_chance(
        self, library: redis.Redis
    ) -> None:
        start(library)
        wrong, right, _ = (self.check(library) for _ in range(3))
        assert self.apply_check(library, "0", wrong) == "rejected"
        assert self.apply_check(library, "1", right) == "approved"
        assert state(library)["status"] == "approved"

    def test_a_wrong_code_checked_twice_counts_once(self, library: redis.Redis) -> None:
        start(library)
        first, second = self.check(library), self.check(library)
        for reply_key in (first, first, second):
            self.apply_check(library, "0", reply_key)
        assert state(library)["status"] == "pending"
        reply_key = self.check(library)
        assert self.apply_check(library, "0", reply_key) == "max_attempts"

    def test_checks_of_an_approved_verification_count_too(self, library: redis.Redis) -> None:
        start(library)
        self.apply_check(library, "1", self.check(library))
        self.check(library)
        self.check(library)
        assert self.answer(library, self.check(library))["result"] == "max_attempts"
        assert state(library)["status"] == "approved"

    def delivered(self, client: redis.Redis, *hashes: str, provider_checks: bool = False) -> None:
        start(client)
        now = now_ms(client)
        for attempt, code_hash in enumerate(hashes):
            if attempt:
                fail(
                    client, attempt, now=now, outcome="timeout", error_code="step_timeout", state="timed_out"
                )
            begin(client, attempt, now=now, code_hash=code_hash, provider=f"p{attempt}")
            deliver(client, attempt + 1, now=now, provider=f"p{attempt}", provider_checks=provider_checks)

    @pytest.mark.parametrize("typed", ["aa11", "bb22"])
    def test_the_hash_of_any_delivered_code_approves(self, library: redis.Redis, typed: str) -> None:
        self.delivered(library, "aa11", "bb22")
        reply_key = self.check(library)
        answer = self.apply_check(library, f"hash:{typed}", reply_key)
        assert answer == "approved"
        assert self.answer(library, reply_key)["result"] == "approved"

    def test_the_hash_of_a_code_never_delivered_is_rejected(self, library: redis.Redis) -> None:
        self.delivered(library, "aa11")
        reply_key = self.check(library)
        answer = self.apply_check(library, "hash:aa12", reply_key)
        assert answer == "rejected"
        assert state(library)["status"] == "sent"

    def test_a_proof_of_several_hashes_approves_when_any_is_a_delivered_code(
        self, library: redis.Redis
    ) -> None:
        # One hash per code secret a rotation accepts: the current one first, then the old.
        self.delivered(library, "aa11")
        reply_key = self.check(library)
        answer = self.apply_check(library, "hash:bb22,aa11", reply_key)
        assert answer == "approved"

    def test_a_proof_of_several_hashes_none_delivered_is_rejected(self, library: redis.Redis) -> None:
        self.delivered(library, "aa11")
        reply_key = self.check(library)
        answer = self.apply_check(library, "hash:bb22,cc33", reply_key)
        assert answer == "rejected"
        assert state(library)["checks"] == "1"

    def test_a_hash_matches_nothing_before_a_code_was_delivered(self, library: redis.Redis) -> None:
        start(library)
        reply_key = self.check(library)
        answer = self.apply_check(library, "hash:aa11", reply_key)
        assert answer == "rejected"

    def test_a_mismatch_where_a_provider_keeps_the_code_asks_that_provider_about_the_number(
        self, library: redis.Redis
    ) -> None:
        self.delivered(library, "", provider_checks=True)
        reply_key = self.check(library)
        answer = self.apply_check(library, "hash:aa11", reply_key)
        assert answer == functions.AskProvider("p0", PHONE)
        assert library.llen(reply_key) == 0
        assert state(library)["status"] == "sent"

    def test_a_worker_before_version_13_is_answered_ask_provider_as_it_expects(
        self, library: redis.Redis
    ) -> None:
        self.delivered(library, "", provider_checks=True)
        reply_key = self.check(library)
        named = functions.apply_check(
            "order-42", proof="hash:aa11", reply_key=reply_key, now_ms=now_ms(library)
        )

        # Such a worker sends no fifth argument, and compares the answer with this text.
        assert replace(named, args=named.args[:4]).send(library) == "ask_provider"

    def test_who_keeps_a_code_reads_back_for_a_library_that_does_not_name_them(
        self, library: redis.Redis, library_url: str
    ) -> None:
        self.delivered(library, "", provider_checks=True)

        async def read() -> functions.AskProvider:
            client = redis.asyncio.Redis.from_url(library_url, decode_responses=True)
            try:
                return await Store(client).check_material("order-42")
            finally:
                await client.aclose()

        assert asyncio.run(read()) == functions.AskProvider("p0", PHONE)

    def test_a_verdict_other_than_1_0_or_a_hash_is_refused(self, library: redis.Redis) -> None:
        start(library)
        with pytest.raises(redis.ResponseError, match="verdict"):
            self.apply_check(library, "yes", self.check(library))

    def test_a_wrong_code_for_an_approved_verification_is_rejected(self, library: redis.Redis) -> None:
        start(library)
        self.apply_check(library, "1", self.check(library))
        reply_key = self.check(library, "0000")
        self.apply_check(library, "0", reply_key)
        assert self.answer(library, reply_key)["result"] == "rejected"
        assert state(library)["status"] == "approved"

    def test_the_reply_key_expires(self, library: redis.Redis) -> None:
        reply_key = self.check(library, verification_id="nobody")
        assert 0 < library.ttl(reply_key) <= 60


class TestAttempts:
    def test_an_attempt_is_claimed_once(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        assert begin(library, now=now) == "ok"
        assert begin(library, now=now) == "stale"

    def test_no_next_attempt_is_claimed_while_one_is_in_flight(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        assert begin(library, 1, now=now) == "in_flight"

    def test_a_claim_for_an_old_attempt_number_is_stale(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now)
        assert begin(library, 0, now=now) == "stale"

    def test_claiming_an_attempt_marks_the_verification_sending(self, library: redis.Redis) -> None:
        start(library)
        begin(library, now=now_ms(library))
        v = state(library)
        assert (v["status"], v["attempt"], v["attempt_state"], v["provider"]) == (
            "sending",
            "1",
            "calling",
            "vp",
        )
        assert events(library)[-1]["event"] == "attempt_started"

    def test_no_attempt_is_claimed_for_a_canceled_verification(self, library: redis.Redis) -> None:
        start(library)
        functions.cancel("order-42").run(library)
        assert begin(library, now=now_ms(library)) == "final"

    def test_a_delivery_marks_the_verification_sent_and_adds_its_cost(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        assert deliver(library, now=now, price_e4=3500) == "ok"
        v = state(library)
        assert (v["status"], v["cost_e4"], v["delivered"], v["ref:vp"]) == ("sent", "3500", "1", "ref-1")
        assert events(library)[-1]["cost"] == "0.35"

    def test_a_delivery_recorded_twice_costs_once(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now)
        assert deliver(library, now=now) == "duplicate"
        assert state(library)["cost_e4"] == "3500"

    def test_a_late_delivery_is_paid_for_but_changes_nothing_else(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        fail(library, now=now, outcome="timeout", error_code="no_result")
        begin(library, 1, now=now, provider="other")
        assert deliver(library, 1, now=now) == "late"
        v = state(library)
        assert (v["cost_e4"], v["attempt"], v["provider"], v["attempt_state"]) == (
            "3500",
            "2",
            "other",
            "calling",
        )

    def test_a_delivery_sets_the_step_deadline(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now, deadline=now + 60_000)
        assert library.zscore(keys.PREFIX + "timers:step", "order-42") == now + 60_000

    def test_a_failed_attempt_records_its_reason_and_sets_a_recovery_timer(
        self, library: redis.Redis
    ) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        assert fail(library, now=now, recovery_at=now + 15_000) == "ok"
        assert (state(library)["attempt_state"], state(library)["reason"]) == ("failed", "busy")
        assert library.zscore(keys.PREFIX + "timers:step", "order-42") == now + 15_000
        assert events(library)[-1]["error_code"] == "BUSY"

    def test_the_code_of_a_call_the_provider_refused_stops_being_accepted(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now, code_hash="h1")
        fail(library, now=now, discard_code=True)
        assert state(library)["codes"] == ""

    def test_the_code_of_a_call_that_may_have_been_placed_stays_accepted(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now, code_hash="h1")
        fail(library, now=now, outcome="timeout", error_code="timeout")
        assert state(library)["codes"] == "h1"

    def test_discarding_a_code_keeps_those_of_earlier_calls(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now, code_hash="h1")
        deliver(library, now=now)
        fail(library, now=now, outcome="timeout", error_code="step_timeout", state="timed_out")
        begin(library, 1, now=now, code_hash="h2", provider="other")
        fail(library, 2, now=now, discard_code=True)
        assert state(library)["codes"] == "h1"

    def test_discarding_a_code_keeps_the_same_code_delivered_by_an_earlier_call(
        self, library: redis.Redis
    ) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now, code_hash="h1")
        deliver(library, now=now)
        fail(library, now=now, outcome="timeout", error_code="step_timeout", state="timed_out")
        begin(library, 1, now=now, code_hash="h1", provider="other")
        fail(library, 2, now=now, discard_code=True)
        assert state(library)["codes"] == "h1"

    def test_a_failure_after_cancel_is_recorded_but_keeps_the_cancel_reason(
        self, library: redis.Redis
    ) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        functions.cancel("order-42").run(library)
        assert fail(library, now=now) == "ok"
        status = functions.status("order-42").run(library)
        assert (status["status"], status["reason"]) == ("canceled", "canceled by the producer")
        assert events(library)[-1]["event"] == "attempt_failed"

    def test_a_late_delivery_event_names_the_step_of_its_own_attempt(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now, step=0)
        fail(library, now=now, outcome="timeout", error_code="no_result")
        begin(library, 1, now=now, provider="other", step=1)
        deliver(library, 1, now=now)
        assert events(library)[-1]["step"] == "0"

    def test_the_next_attempt_after_a_failure_is_a_fallback_event(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        fail(library, now=now)
        begin(library, 1, now=now, provider="other")
        fallback, started = events(library)[-2:]
        assert (fallback["event"], fallback["from_provider"], fallback["provider"], fallback["reason"]) == (
            "fallback",
            "vp",
            "other",
            "busy",
        )
        assert started["event"] == "attempt_started"

    def test_giving_up_without_any_delivery_fails_the_verification(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        assert give_up(library, 0, now=now, reason="no_provider") == "failed"
        assert (state(library)["status"], state(library)["reason"]) == ("failed", "no_provider")
        assert events(library)[-1]["event"] == "failed"

    def test_giving_up_after_a_delivery_waits_for_the_users_code(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now)
        fail(library, now=now, outcome="timeout", error_code="step_timeout", state="timed_out")
        assert give_up(library, 1, now=now, reason="timeout") == "waiting"
        assert state(library)["status"] == "sent"

    def test_a_hard_give_up_fails_even_after_a_delivery(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now)
        fail(library, now=now, outcome="bad_number", error_code="number_is_empty")
        assert give_up(library, 1, now=now, reason="bad_number", hard=True) == "failed"


class TestTimersAndLifetime:
    def test_a_due_step_timer_enqueues_an_advance_of_the_current_attempt(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        library.delete(keys.queue(keys.VERIFY_QUEUE))
        assert functions.fire_timers(now_ms=now + 31_000, limit=100).run(library).fired == 1
        assert queued(library)[-1]["args"] == ["order-42", 1, "timeout"]

    def test_a_timer_fires_once(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        functions.fire_timers(now_ms=now + 31_000, limit=100).run(library)
        assert functions.fire_timers(now_ms=now + 31_000, limit=100).run(library).fired == 0

    def test_timers_not_yet_due_stay(self, library: redis.Redis) -> None:
        start(library)
        assert functions.fire_timers(now_ms=now_ms(library), limit=100).run(library).fired == 0

    def test_a_pass_tells_when_the_next_timer_falls_due(self, library: redis.Redis) -> None:
        start(library)
        recovery = library.zscore(keys.PREFIX + "timers:step", "order-42")
        expiry = library.zscore(keys.PREFIX + "timers:expire", "order-42")
        assert recovery is not None
        assert expiry is not None

        before = functions.fire_timers(now_ms=now_ms(library), limit=100).run(library)
        after = functions.fire_timers(now_ms=int(recovery), limit=100).run(library)

        assert before == functions.TimerPass(fired=0, next_due_ms=int(recovery))
        assert after == functions.TimerPass(fired=1, next_due_ms=int(expiry))

    def test_a_pass_with_no_timer_waiting_says_none(self, library: redis.Redis) -> None:
        assert functions.fire_timers(now_ms=now_ms(library), limit=100).run(library) == functions.TimerPass(
            0, None
        )

    def test_a_full_batch_tells_that_more_are_due(self, library: redis.Redis) -> None:
        now = now_ms(library)
        library.zadd(keys.PREFIX + "timers:poll", {"gone-1": now - 2, "gone-2": now - 1})

        first = functions.fire_timers(now_ms=now, limit=1).run(library)
        second = functions.fire_timers(now_ms=now, limit=1).run(library)

        assert first.next_due_ms == now - 1
        assert second.next_due_ms is None

    def test_the_expiry_timer_ends_the_verification_as_expired(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        functions.fire_timers(now_ms=now_ms(library) + HOUR_MS, limit=100).run(library)
        assert state(library)["status"] == "expired"
        assert events(library)[-1]["event"] == "expired"

    def test_status_reads_expired_once_the_lifetime_is_over(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        library.hset(keys.verification("order-42"), "expires_at", now_ms(library) - 1)
        assert functions.status("order-42").run(library)["status"] == "expired"

    def test_an_expired_verification_takes_no_more_attempts(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        functions.fire_timers(now_ms=now_ms(library) + HOUR_MS, limit=100).run(library)
        assert begin(library, now=now_ms(library) + HOUR_MS) == "final"

    def test_the_verification_key_outlives_its_lifetime_by_a_day(self, library: redis.Redis) -> None:
        start(library, ttl=60)
        assert 86_400 < library.ttl(keys.verification("order-42")) <= 86_460


class TestStatusAndCancel:
    def test_status_of_an_unknown_id_is_not_found(self, library: redis.Redis) -> None:
        assert functions.status("nobody").run(library) == {"id": "nobody", "status": "not_found"}

    def test_status_masks_the_phone_and_never_shows_codes(self, library: redis.Redis) -> None:
        start(library)
        library.hset(keys.verification("order-42"), "codes", "abcdef")
        status = functions.status("order-42").run(library)
        assert status["phone"] == "+7999*****67"
        assert "abcdef" not in json.dumps(status)

    def test_status_reports_attempts_checks_left_and_cost(self, library: redis.Redis) -> None:
        start(library)
        now = now_ms(library)
        begin(library, now=now)
        deliver(library, now=now, price_e4=3500)
        status = functions.status("order-42").run(library)
        assert (status["status"], status["attempts"], status["checks_left"], status["cost"]) == (
            "sent",
            1,
            3,
            "0.35",
        )
        assert (status["provider"], status["channel"], status["step"]) == ("vp", "flashcall", 0)

    def test_cancel_ends_the_verification_with_an_event(self, library: redis.Redis) -> None:
        start(library)
        assert functions.cancel("order-42").run(library)["status"] == "canceled"
        assert events(library)[-1]["event"] == "canceled"
        assert library.zscore(keys.PREFIX + "timers:expire", "order-42") is None

    def test_cancel_leaves_a_finished_verification_as_it_was(self, library: redis.Redis) -> None:
        start(library, ttl=30)
        functions.fire_timers(now_ms=now_ms(library) + HOUR_MS, limit=100).run(library)
        assert functions.cancel("order-42").run(library)["status"] == "expired"

    def test_cancel_of_an_unknown_id_is_not_found(self, library: redis.Redis) -> None:
        assert functions.cancel("nobody").run(library)["status"] == "not_found"

    @pytest.mark.parametrize("function", [functions.status, functions.cancel], ids=_named)
    def test_a_malformed_id_is_refused(
        self, library: redis.Redis, function: Callable[[str], functions.Call[Any]]
    ) -> None:
        with pytest.raises(redis.ResponseError, match="expected one argument: a verification id"):
            function("a b").run(library)

    def test_cancel_answers_with_the_time_of_the_cancel(self, library: redis.Redis) -> None:
        start(library)
        library.hset(keys.verification("order-42"), "updated_at", 1)
        assert functions.cancel("order-42").run(library)["updated_at"] > 1

    @pytest.mark.parametrize(
        ("function", "most"),
        [(functions.start, 2), (functions.check, 2), (functions.status, 1)],
        ids=["start", "check", "status"],
    )
    def test_extra_arguments_are_refused(
        self, library: redis.Redis, function: Callable[[str], functions.Call[Any]], most: int
    ) -> None:
        call = function(json.dumps({"id": "a", "phone": PHONE}))
        with pytest.raises(redis.ResponseError, match="expected one argument"):
            library.fcall(call.name, 0, *call.args, *["{}"] * most)

    @pytest.mark.parametrize(
        ("cost_e4", "shown"), [(0, "0.00"), (3500, "0.35"), (33000, "3.30"), (10000, "1.00"), (3550, "0.355")]
    )
    def test_costs_are_shown_in_roubles(self, library: redis.Redis, cost_e4: int, shown: str) -> None:
        start(library)
        library.hset(keys.verification("order-42"), "cost_e4", cost_e4)
        assert functions.status("order-42").run(library)["cost"] == shown
