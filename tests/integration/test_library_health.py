"""The health `flashcall_routing_state` reports, from the running sums it keeps, against a
scan of every bucket of the window: what it answered before it kept sums.

Attempts are recorded as a worker records them (start, claim, then delivered or failed,
each at the test's clock), on a redis-server of the library's own. The reads come at
advancing times, with windows of different lengths and with clocks a few seconds behind
the writers' (a bucket then holds attempts the reader's window does not reach yet); some
writers' clocks are behind by minutes (their attempts fall before what a reader's window
kept); the sums are dropped now and then, as after an upgrade or two hours unread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.core import keys
from worker.redis import functions
from worker.redis.functions import AdmissionGuard, PublishedConfig
from worker.redis.library import install

pytestmark = pytest.mark.integration

DAY = "20261127"
PROVIDERS = ("tel", "vp")
CHANNELS = ("flashcall", "voice", "sms")
BUCKET_MS = 10_000
HOUR_MS = 3_600_000
#: The test's clock runs ahead of Redis's by at most this, so that every verification it
#: starts (for a day) outlives it.
LONGEST_RUN_MS = 20 * HOUR_MS
GUARD = AdmissionGuard(reset_ms=30_000, lease_ms=30_000, fail_max=1000, cost_e4=3500, budget_e4=0, day=DAY)


@dataclass(frozen=True)
class Record:
    provider: str
    channel: str
    outcome: str
    """'delivered', 'fault' (the provider's failure) or 'refused' (a failure that is not its fault)."""
    latency_ms: int
    behind_ms: int = 0
    """How far the writer's clock is behind the test's."""


@dataclass(frozen=True)
class Read:
    window_ms: int
    behind_ms: int
    """How far the reader's clock is behind the writers'."""


@dataclass(frozen=True)
class Wait:
    ms: int


@dataclass(frozen=True)
class Forget:
    provider: str


records = st.builds(
    Record,
    st.sampled_from(PROVIDERS),
    st.sampled_from(CHANNELS),
    st.sampled_from(["delivered", "fault", "refused"]),
    st.integers(0, 5000),
    st.one_of(st.just(0), st.integers(0, 120_000)),
)
reads = st.builds(Read, st.sampled_from([60_000, 300_000, 600_000]), st.integers(0, 9_000))
waits = st.builds(
    Wait,
    st.one_of(
        st.integers(0, 15_000),
        st.integers(15_000, 700_000),
        # Past the hour after which the sums are rebuilt, or the window entirely.
        st.sampled_from([HOUR_MS - 1000, HOUR_MS + 5 * 60_000]),
    ),
)
operations = st.lists(
    st.one_of(records, records, reads, reads, waits, waits, st.builds(Forget, st.sampled_from(PROVIDERS))),
    max_size=40,
)


@pytest.fixture
def client(library_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(library_url, decode_responses=True)
    yield connection
    connection.close()


class Recorder:
    """Attempts, each on a verification of its own, as a worker claims and settles them."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.made = 0

    def record(self, record: Record, *, now: int) -> None:
        self.made += 1
        verification_id = f"h{self.made}"
        phone = f"+7999{self.made:07d}"
        started = functions.start(json.dumps({"id": verification_id, "phone": phone, "ttl": 86_400}))
        assert started.run(self.client)["status"] == "pending"
        claim = functions.begin_attempt(
            verification_id,
            expected_attempt=0,
            now_ms=now,
            step=0,
            channel=record.channel,
            provider=record.provider,
            code_hash="",
            deadline_ms=now + 60_000,
            guard=GUARD,
        ).run(self.client)
        assert claim.result == "ok", claim
        if record.outcome == "delivered":
            answer = functions.attempt_delivered(
                verification_id,
                attempt=1,
                now_ms=now,
                provider=record.provider,
                channel=record.channel,
                step=0,
                ref="call-1",
                price_e4=3500,
                code_hash="",
                provider_checks=False,
                step_deadline_ms=now + 60_000,
                latency_ms=record.latency_ms,
                day=DAY,
            ).run(self.client)
        else:
            answer = functions.attempt_failed(
                verification_id,
                attempt=1,
                now_ms=now,
                outcome="provider_error" if record.outcome == "fault" else "busy",
                error_code="X",
                state="failed",
                recovery_at_ms=now + 15_000,
                discard_code=True,
                provider_fault=record.outcome == "fault",
                latency_ms=record.latency_ms,
            ).run(self.client)
        assert answer == "ok"


def health(client: redis.Redis, *, now: int, window_ms: int) -> dict[str, Any]:
    state = functions.routing_state(now_ms=now, window_ms=window_ms, day=DAY, providers=PROVIDERS).run(client)
    return {name: state[name]["health"] for name in PROVIDERS}


def scanned(client: redis.Redis, *, now: int, window_ms: int) -> dict[str, Any]:
    """Every bucket of the window read and added up."""
    buckets = range((now - window_ms) // BUCKET_MS, now // BUCKET_MS + 1)
    out: dict[str, Any] = {}
    for name in PROVIDERS:
        out[name] = {}
        for channel in CHANNELS:
            pipe = client.pipeline(transaction=False)
            for bucket in buckets:
                pipe.hmget(f"{keys.PREFIX}health:{name}:{channel}:{bucket}", ["ok", "fail", "ms"])
            totals = [0, 0, 0]
            for fields in pipe.execute():
                totals = [total + int(value or 0) for total, value in zip(totals, fields, strict=True)]
            out[name][channel] = dict(zip(("ok", "fail", "ms"), totals, strict=True))
    return out


def redis_now(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
# Buckets a wider window takes in again; attempts recorded behind the oldest bucket the sums
# hold; sums of failures alone moved past their bucket.
@example([Record("vp", "sms", "delivered", 7), Wait(70_000), Read(60_000, 0), Read(600_000, 0)])
@example([Read(60_000, 0), Record("vp", "voice", "fault", 9, behind_ms=120_000), Read(60_000, 0)])
@example([Record("tel", "flashcall", "fault", 5), Read(60_000, 0), Wait(70_000), Read(60_000, 0)])
def test_health_from_the_running_sums_is_what_a_scan_of_the_buckets_gives(
    client: redis.Redis, steps: list[Record | Read | Wait | Forget]
) -> None:
    client.flushall()
    install(client)
    functions.publish_config(PublishedConfig(policies=("default",), per_phone=((10**6, 1000),))).run(client)
    recorder = Recorder(client)
    began = now = redis_now(client)
    for step in [*steps, Read(300_000, 0)]:
        if isinstance(step, Record):
            recorder.record(step, now=now - step.behind_ms)
        elif isinstance(step, Wait):
            now = min(now + step.ms, began + LONGEST_RUN_MS)
        elif isinstance(step, Forget):
            client.delete(f"{keys.PREFIX}health:{step.provider}")
        else:
            at = now - step.behind_ms
            assert health(client, now=at, window_ms=step.window_ms) == scanned(
                client, now=at, window_ms=step.window_ms
            ), step


def test_a_read_moves_the_sums_instead_of_reading_every_bucket(library: redis.Redis) -> None:
    recorder = Recorder(library)
    now = redis_now(library)
    functions.publish_config(PublishedConfig(policies=("default",), per_phone=((10**6, 1000),))).run(library)
    for channel in CHANNELS:
        recorder.record(Record("vp", channel, "delivered", 100), now=now)
    health(library, now=now + 300_000, window_ms=300_000)
    library.config_resetstat()

    later = health(library, now=now + 310_000, window_ms=300_000)

    calls = {name: stats["calls"] for name, stats in library.info("commandstats").items()}
    assert later["vp"] == {channel: {"ok": 0, "fail": 0, "ms": 0} for channel in CHANNELS}
    # Per provider: its breaker and balance, and its sums; one bucket per channel left the window.
    assert (calls["cmdstat_hmget"], calls["cmdstat_hgetall"]) == (2 * len(PROVIDERS) + len(CHANNELS), 2)


def test_a_read_within_the_buckets_of_the_last_writes_nothing(library: redis.Redis) -> None:
    now = redis_now(library) // BUCKET_MS * BUCKET_MS
    health(library, now=now, window_ms=300_000)
    before = library.hgetall(f"{keys.PREFIX}health:vp")

    health(library, now=now + BUCKET_MS - 1, window_ms=300_000)

    assert library.hgetall(f"{keys.PREFIX}health:vp") == before
