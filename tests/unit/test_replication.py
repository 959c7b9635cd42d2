"""When a claim waits for a replica (worker/redis/replication.py), decided from INFO replication.

A stub stands in for Redis here: it answers INFO replication as told, and the clock is
moved by hand. tests/integration/test_claim_replication.py runs the same against a real
primary and replica.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from worker.core.errors import ClaimUnreplicated, ConfigurationError
from worker.process.settings import Settings
from worker.redis.replication import GRACE_S, MAX_LAG_S, READ_EVERY_S, Mode, ReplicaWatch


def replica(*, offset: int = 100, lag: int = 0, state: str = "online") -> dict[str, Any]:
    return {"ip": "127.0.0.1", "port": 6380, "state": state, "offset": offset, "lag": lag}


class StubRedis:
    """Answers INFO replication as a primary with these replicas would."""

    def __init__(self, *replicas: dict[str, Any], replid: str = "a" * 40, offset: int = 100) -> None:
        self.replicas = list(replicas)
        self.replid = replid
        self.offset = offset
        self.reads = 0
        self.refuse = False

    async def info(self, section: str) -> dict[str, Any]:
        assert section == "replication"
        if self.refuse:
            raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'info' command")
        self.reads += 1
        answer: dict[str, Any] = {
            "role": "master",
            "connected_slaves": len(self.replicas),
            "master_replid": self.replid,
            "master_repl_offset": self.offset,
        }
        answer.update({f"slave{n}": value for n, value in enumerate(self.replicas)})
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def move(self, seconds: float) -> None:
        self.now += seconds


def watch(stub: StubRedis, clock: Clock) -> ReplicaWatch:
    return ReplicaWatch(cast(redis.asyncio.Redis, stub), wait_ms=200, clock=clock)


def mode(watcher: ReplicaWatch) -> Mode:
    return asyncio.run(watcher.mode())


def test_a_primary_without_replicas_lets_claims_through_without_waiting() -> None:
    assert mode(watch(StubRedis(), Clock())) is Mode.ALONE


def test_a_primary_with_an_online_replica_makes_claims_wait() -> None:
    assert mode(watch(StubRedis(replica()), Clock())) is Mode.WAITING


def test_a_replica_still_copying_the_dataset_is_not_waited_for() -> None:
    assert mode(watch(StubRedis(replica(state="wait_bgsave")), Clock())) is Mode.ALONE


def test_the_primary_is_read_at_most_once_a_second() -> None:
    stub, clock = StubRedis(), Clock()
    watcher = watch(stub, clock)
    for _ in range(5):
        mode(watcher)
    clock.move(READ_EVERY_S)
    mode(watcher)

    assert stub.reads == 2


@pytest.mark.parametrize(
    "replicas",
    [
        # The old primary of a failover: its replica was promoted, and it takes writes
        # until clients move, then drops them. A claim there must not go through unwaited.
        pytest.param([], id="the replica left"),
        pytest.param([replica(lag=MAX_LAG_S + 1)], id="the replica stopped acknowledging"),
    ],
)
def test_claims_keep_waiting_for_the_grace_once_the_primary_has_no_acknowledging_replica(
    replicas: list[dict[str, Any]],
) -> None:
    stub, clock = StubRedis(replica()), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.replicas = replicas
    clock.move(READ_EVERY_S)

    assert mode(watcher) is Mode.WAITING
    clock.move(GRACE_S)
    assert mode(watcher) is Mode.ALONE


def test_a_new_primary_without_replica_is_written_to_at_once() -> None:
    # The promoted replica: its replid is its own, and what it holds is the truth.
    stub, clock = StubRedis(replica()), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.replicas.clear()
    stub.replid = "b" * 40
    clock.move(READ_EVERY_S)

    assert mode(watcher) is Mode.ALONE


def test_after_an_unacknowledged_claim_claims_are_held_until_a_replica_has_applied_it() -> None:
    stub, clock = StubRedis(replica(offset=100), offset=100), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.offset = 160  # the claim, written and not acknowledged

    refusal = asyncio.run(watcher.unacknowledged())
    assert refusal.written
    with pytest.raises(ClaimUnreplicated) as held:
        asyncio.run(watcher.before_claim())
    assert not held.value.written

    stub.replicas = [replica(offset=160)]
    clock.move(READ_EVERY_S)
    assert asyncio.run(watcher.before_claim()) is True


def test_claims_held_on_a_primary_whose_replica_is_gone_go_through_after_the_grace() -> None:
    stub, clock = StubRedis(replica()), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.replicas.clear()
    asyncio.run(watcher.unacknowledged())
    assert mode(watcher) is Mode.HOLDING

    clock.move(GRACE_S)
    assert asyncio.run(watcher.before_claim()) is False


def test_claims_held_on_an_old_primary_go_to_the_new_one_at_once() -> None:
    stub, clock = StubRedis(replica()), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.replicas.clear()
    asyncio.run(watcher.unacknowledged())
    stub.replid = "b" * 40
    clock.move(READ_EVERY_S)

    assert mode(watcher) is Mode.ALONE


def test_a_worker_whose_user_may_not_read_the_replication_state_is_told_what_to_allow() -> None:
    stub = StubRedis()
    stub.refuse = True

    with pytest.raises(ConfigurationError, match=r"\+info\|replication"):
        mode(watch(stub, Clock()))


def test_a_refusal_after_the_first_reading_keeps_the_last_one() -> None:
    stub, clock = StubRedis(replica()), Clock()
    watcher = watch(stub, clock)
    mode(watcher)
    stub.refuse = True
    clock.move(READ_EVERY_S)

    assert mode(watcher) is Mode.WAITING


def test_the_wait_for_a_replica_defaults_to_half_a_second() -> None:
    assert Settings.from_env({}, require_secret=False).replica_wait_ms == 500


def test_the_wait_for_a_replica_is_read_in_milliseconds() -> None:
    assert (
        Settings.from_env({"FLASHCALL_REPLICA_WAIT_MS": "150"}, require_secret=False).replica_wait_ms == 150
    )


@pytest.mark.parametrize("value", ["0", "-1", "0.5", "1s", "5001"])
def test_a_wait_for_a_replica_that_is_not_between_1_ms_and_5_s_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="FLASHCALL_REPLICA_WAIT_MS"):
        Settings.from_env({"FLASHCALL_REPLICA_WAIT_MS": value}, require_secret=False)
