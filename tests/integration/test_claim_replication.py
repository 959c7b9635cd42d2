"""A claim reaches a replica before its provider is called (worker/redis/replication.py).

A primary and a replica of its own, started here, with a worker whose claims wait up to
200 ms for the replica. The replica is frozen (SIGSTOP: its connection stays open and it
acknowledges nothing, as a hung host or a lost link would) or killed, and the sandbox's
records say whom the providers called.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port, local_stack, redis_server
from tests.support import Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEST_ROUTING = Path(__file__).resolve().parent.parent / "routing.test.yaml"
_replicas = itertools.count()


@dataclass
class Replicated:
    stack: LocalStack
    primary: redis.Redis
    metrics_port: int
    log_dir: Path

    def unreplicated(self, claim: str) -> float:
        """The worker's flashcall_claims_unreplicated_total{claim=...}."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "flashcall_claims_unreplicated_total" and sample.labels["claim"] == claim:
                    return sample.value
        return 0.0


@dataclass
class Replica:
    client: redis.Redis
    pid: int

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    log_dir = Path(tempfile.mkdtemp(prefix="flashcall-replicated-"))
    with (
        redis_server(log_dir, name="primary", args=["--dir", str(log_dir)]) as url,
        local_stack(redis_url=url, routing_path=TEST_ROUTING) as stack,
    ):
        port = free_port()
        stack.start_worker(
            processes=1, threads=16, metrics_port=port, env={"FLASHCALL_REPLICA_WAIT_MS": "200"}
        )
        primary = redis.Redis.from_url(url, decode_responses=True)
        yield Replicated(stack, primary, port, log_dir)
        primary.close()


@pytest.fixture
def replica(replicated: Replicated) -> Iterator[Replica]:
    """A replica of the primary, in sync; thawed (and stopped) after the test."""
    port = int(replicated.primary.connection_pool.connection_kwargs["port"])
    name = f"replica-{next(_replicas)}"
    folder = replicated.log_dir / name
    folder.mkdir()
    # A replica writes the dataset it receives into its directory.
    args = ["--replicaof", "127.0.0.1", str(port), "--dir", str(folder)]
    with redis_server(replicated.log_dir, name=name, args=args) as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        eventually(lambda: client.info("replication")["master_link_status"] == "up", "the replica in sync")
        eventually(lambda: caught_up(replicated.primary), "the replica acknowledging all the primary wrote")
        started = Replica(client, int(client.info("server")["process_id"]))
        try:
            yield started
        finally:
            with contextlib.suppress(ProcessLookupError):
                started.thaw()
            client.close()


@pytest.fixture
def producer(replicated: Replicated) -> Iterator[Producer]:
    client = Producer.from_url(replicated.stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def sandbox(replicated: Replicated) -> Iterator[Sandbox]:
    control = Sandbox(replicated.stack.sandbox_url)
    yield control
    control.close()


def eventually(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, KeyError):
            if condition():
                return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def caught_up(primary: redis.Redis) -> bool:
    """One replica online that has acknowledged everything the primary wrote so far."""
    info = primary.info("replication")
    replicas = [value for name, value in info.items() if name.startswith("slave")]
    return (
        len(replicas) == 1
        and replicas[0]["state"] == "online"
        and int(replicas[0]["offset"]) >= int(info["master_repl_offset"])
    )


def waits(primary: redis.Redis) -> int:
    stats = primary.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def retried(primary: redis.Redis, verification_id: str) -> bool:
    """Whether a message of this verification waits in the delay queue, to be retried."""
    delayed = primary.hvals(keys.queue_messages(f"{keys.VERIFY_QUEUE}.DQ"))
    return any(f'"{verification_id}"' in body for body in delayed)


def attempt(client: redis.Redis, verification_id: str) -> tuple[str, str]:
    number, state = cast(
        list[str | None], client.hmget(keys.verification(verification_id), ["attempt", "attempt_state"])
    )
    return number or "", state or ""


def start_unacknowledged(
    replicated: Replicated, replica: Replica, producer: Producer, verification_id: str, phone: str
) -> None:
    """Freeze the replica, start a verification, and wait until its claim is handed back."""
    counted = replicated.unreplicated("unacknowledged")
    replica.freeze()
    producer.start(verification_id, "+" + phone)
    eventually(lambda: replicated.unreplicated("unacknowledged") > counted, "the claim counted unreplicated")


def test_a_claim_reaches_the_replica_before_the_provider_is_called(
    replicated: Replicated, replica: Replica, producer: Producer, sandbox: Sandbox, phone: str
) -> None:
    before = waits(replicated.primary)
    producer.start("repl-healthy-" + phone, "+" + phone)
    producer.wait_for("repl-healthy-" + phone, {"delivered"}, timeout=20)

    assert waits(replicated.primary) > before
    # The calls first, then the replica: every call the provider saw was claimed on the
    # replica before it was placed. (The step's 2 s timeout may start the next attempt
    # meanwhile, so the count, not the attempt number, is what holds.)
    calls = len(sandbox.calls(phone))
    assert 1 <= calls <= int(attempt(replica.client, "repl-healthy-" + phone)[0])


def test_a_claim_no_replica_acknowledges_calls_nobody_and_is_counted(
    replicated: Replicated, replica: Replica, producer: Producer, sandbox: Sandbox, phone: str
) -> None:
    verification_id = "repl-frozen-" + phone
    start_unacknowledged(replicated, replica, producer, verification_id, phone)
    eventually(lambda: retried(replicated.primary, verification_id), "its message handed back")

    # Claimed on the primary, and no provider was asked to call.
    assert attempt(replicated.primary, verification_id) == ("1", "calling")
    assert sandbox.calls(phone) == []
    replica.thaw()


def test_a_surviving_unacknowledged_claim_waits_for_its_lease_and_the_user_is_called_once(
    replicated: Replicated, replica: Replica, producer: Producer, sandbox: Sandbox, phone: str
) -> None:
    verification_id = "repl-lease-" + phone
    start_unacknowledged(replicated, replica, producer, verification_id, phone)
    replica.thaw()

    # The retried message finds the attempt in flight and calls nobody; at the attempt's
    # lease (2 s + 10 s) it moves on, and only then is the user called.
    delivered = producer.wait_for(verification_id, {"delivered"}, timeout=60)
    assert delivered["attempt"] == "2"
    assert len(sandbox.calls(phone)) == 1


def test_claims_are_held_until_the_replica_has_caught_up_then_made_once(
    replicated: Replicated,
    replica: Replica,
    producer: Producer,
    sandbox: Sandbox,
    new_phone: Callable[[], str],
) -> None:
    first, held = new_phone(), new_phone()
    start_unacknowledged(replicated, replica, producer, "repl-first-" + first, first)
    producer.start("repl-held-" + held, "+" + held)
    eventually(lambda: retried(replicated.primary, "repl-held-" + held), "the next one handed back")

    # Not even claimed: it does not have to wait for a lease.
    assert attempt(replicated.primary, "repl-held-" + held) == ("0", "")
    assert replicated.unreplicated("held") > 0
    replica.thaw()

    delivered = producer.wait_for("repl-held-" + held, {"delivered"}, timeout=30)
    assert delivered["attempt"] == "1"
    assert len(sandbox.calls(held)) == 1


def test_with_the_replica_gone_for_good_claims_go_through_once_its_grace_is_over(
    replicated: Replicated,
    replica: Replica,
    producer: Producer,
    sandbox: Sandbox,
    new_phone: Callable[[], str],
) -> None:
    first, later = new_phone(), new_phone()
    counted = replicated.unreplicated("unacknowledged") + replicated.unreplicated("held")
    replica.kill()
    producer.start("repl-gone-" + first, "+" + first)
    eventually(
        lambda: replicated.unreplicated("unacknowledged") + replicated.unreplicated("held") > counted,
        "claims handed back while the replica was just gone",
    )
    producer.start("repl-alone-" + later, "+" + later)

    producer.wait_for("repl-alone-" + later, {"delivered"}, timeout=60)
    assert len(sandbox.calls(later)) == 1


@pytest.fixture
def producer_of_the_session(stack: LocalStack) -> Iterator[Producer]:
    client = Producer.from_url(stack.redis_url)
    yield client
    client.close()


def test_without_a_replica_no_claim_waits(
    stack: LocalStack, worker: ManagedProcess, producer_of_the_session: Producer, phone: str
) -> None:
    # The session's Redis has no replica: claims there are plain FCALLs.
    producer_of_the_session.start("repl-none-" + phone, "+" + phone)
    producer_of_the_session.wait_for("repl-none-" + phone, {"delivered"}, timeout=20)

    with redis.Redis.from_url(stack.redis_url, decode_responses=True) as client:
        assert "cmdstat_wait" not in client.info("commandstats")
