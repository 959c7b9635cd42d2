"""Redis behind Sentinel: workers, the callback receiver and producers follow a failover.

A group of its own (flashcall_dev/sentinel_stack.py: one primary, one replica, three sentinels,
quorum 2, down after 1 s) and a stack whose every process is given only
REDIS_URL=redis+sentinel://...; a worker (with the callback receiver's URL) and the
receiver are started once, before any failover, and must follow each one by themselves.
The tests run in order: each fails the group over from where the previous one left it
(a kill first, whose victim comes back as a replica, then a SENTINEL FAILOVER).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flashcall_dev.sentinel_stack import SentinelGroup, sentinel_group
from flashcall_dev.stack import LocalStack, local_stack
from tests.support import Sandbox
from worker.client import Producer
from worker.core import keys
from worker.core.errors import StoreUnavailable
from worker.redis import functions
from worker.redis.connections import PRIMARY_CHECK_INTERVAL
from worker.redis.library import library_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEST_ROUTING = Path(__file__).resolve().parent.parent / "routing.test.yaml"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with sentinel_group(Path(tempfile.mkdtemp(prefix="flashcall-sentinel-"))) as started:
        yield started


@pytest.fixture(scope="module")
def through_sentinel(group: SentinelGroup) -> Iterator[LocalStack]:
    with local_stack(redis_url=group.url, routing_path=TEST_ROUTING) as stack:
        _, receiver_url = stack.start_callbacks()
        stack.start_worker(processes=1, threads=16, env={"FLASHCALL_CALLBACK_BASE_URL": receiver_url})
        yield stack


@pytest.fixture(scope="module")
def long_lived(group: SentinelGroup) -> Iterator[Producer]:
    """A producer that keeps its connections across every failover of the module."""
    producer = Producer.from_url(group.url)
    yield producer
    producer.close()


@pytest.fixture
def sandbox(through_sentinel: LocalStack) -> Iterator[Sandbox]:
    control = Sandbox(through_sentinel.sandbox_url)
    yield control
    control.close()


def verify(producer: Producer, sandbox: Sandbox, phone: str) -> str:
    """Start a verification, type the code the phone received; answers its id once approved."""
    verification_id = f"sentinel-{secrets.token_hex(4)}"
    producer.start(verification_id, "+" + phone)
    producer.wait_for(verification_id, {"delivered"}, timeout=20)
    code = sandbox.inbox(phone)[-1]["code"]
    assert producer.check(verification_id, code)["result"] == "approved"
    return verification_id


def busy_then_backup(url: str, sandbox: Sandbox, phone: str) -> None:
    """A busy flash call is known as busy only through the callback the receiver queues,
    well before the step's 2 s timeout; the verification then goes to the next provider."""
    sandbox.script(phone, {"state": "BUSY", "callback_delay_ms": 100})
    producer = Producer.from_url(url)
    try:
        producer.start("sentinel-busy-" + phone, "+" + phone)
        failed = producer.wait_for("sentinel-busy-" + phone, {"attempt_failed"}, timeout=20)
        assert (failed["reason"], failed["error_code"]) == ("busy", "BUSY")
        producer.wait_for(
            "sentinel-busy-" + phone, {"delivered"}, timeout=20, where=lambda e: e["provider"] == "vp-backup"
        )
    finally:
        producer.close()


def test_a_worker_given_only_the_sentinel_url_completes_verifications(
    through_sentinel: LocalStack,
    group: SentinelGroup,
    long_lived: Producer,
    sandbox: Sandbox,
    new_phone: Callable[[], str],
) -> None:
    verification_id = verify(long_lived, sandbox, new_phone())
    with_primary = [event["event"] for event in long_lived.events(verification_id)]
    assert with_primary == ["created", "attempt_started", "delivered", "approved"]
    busy_then_backup(group.url, sandbox, new_phone())
    # The library the worker installed on the primary is replicated: a promoted replica has it.
    with group.node(group.wait_for_replica()) as replica:
        assert functions.version().run_read_only(replica) == library_version()


def test_without_a_primary_producers_get_an_error_then_all_follow_the_promoted_replica(
    through_sentinel: LocalStack,
    group: SentinelGroup,
    long_lived: Producer,
    sandbox: Sandbox,
    new_phone: Callable[[], str],
) -> None:
    replica = group.wait_for_replica()
    # While the replica hangs the sentinels may promote nobody: no primary at all.
    group.pause(replica)
    try:
        group.wait_until_down(replica)
        killed = group.kill_primary()
        with pytest.raises(StoreUnavailable, match="no Redis primary answered"):
            long_lived.start(f"sentinel-lost-{secrets.token_hex(4)}", "+" + new_phone())
    finally:
        group.resume(replica)
    assert group.wait_for_new_primary(killed) == replica
    group.restart(killed)
    verify(long_lived, sandbox, new_phone())
    busy_then_backup(group.url, sandbox, new_phone())


def test_after_sentinel_failover_producers_workers_and_the_receiver_use_the_new_primary(
    through_sentinel: LocalStack,
    group: SentinelGroup,
    long_lived: Producer,
    sandbox: Sandbox,
    new_phone: Callable[[], str],
) -> None:
    # Settled first, as failover() settles before it reads the primary it moves away from: a
    # group the test before has just failed over may still move on its own meanwhile.
    group.wait_for_replica()
    old = group.primary_port()
    new = group.failover()
    assert new != old
    # The old primary stays up, taking writes, until a sentinel demotes it (~8 s later):
    # connections opened before the failover move well before that.
    moved_within = time.monotonic() + 2 * PRIMARY_CHECK_INTERVAL + 1
    while long_lived.client.config_get("port")["port"] != str(new):
        assert time.monotonic() < moved_within, "the producer's connection still talks to the old primary"
        time.sleep(0.05)
    approved = verify(long_lived, sandbox, new_phone())
    with group.node(new) as primary:
        assert primary.hget(keys.verification(approved), "status") == "approved"
    # The receiver's connections date from before the failover too.
    busy_then_backup(group.url, sandbox, new_phone())
