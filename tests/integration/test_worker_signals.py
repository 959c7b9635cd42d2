"""`flashcall worker` stopped by a signal, whichever of its processes receive it: every one of
them is gone within --shutdown-timeout and a few seconds, and what it had in flight is
finished or handed back (issue 23; worker/process/middleware/shutdown.py).

Real processes: a worker of one verification process, one check process and the metrics
exposition's process, started in a session of its own so that its pid is its process
group's id, as under systemd or `timeout`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flashcall_dev.stack import LocalStack, ManagedProcess
from tests.support import OwnStack, Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc"),
]

SHUTDOWN_TIMEOUT_S = 3
#: What may follow the timeout: Dramatiq notices a signal within a second, its consumers
#: stop within another, its main process checks on its children every second.
GRACE_S = 5

# A call that hangs outlives the shutdown: the provider's timeout (5 s) is longer than it.
# Its lease is that timeout plus 10 s; the step waits 16 s from the claim.
ROUTING = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 5s
    channels: {flashcall: {cost: 0.35}, voice: {cost: 0.35}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 16s}
      - {channel: voice}
limits:
  per_phone: [{limit: 100, per: 1m}]
"""
STEP_S = 16


@pytest.fixture(scope="module")
def stack(own_stack: OwnStack) -> Iterator[LocalStack]:
    with own_stack(ROUTING) as started:
        yield started


@pytest.fixture(scope="module")
def sandbox(stack: LocalStack) -> Iterator[Sandbox]:
    control = Sandbox(stack.sandbox_url)
    yield control
    control.close()


@pytest.fixture(scope="module")
def producer(stack: LocalStack) -> Iterator[Producer]:
    client = Producer.from_url(stack.redis_url)
    yield client
    client.close()


StartWorker = Callable[..., ManagedProcess]


@pytest.fixture
def start_worker(stack: LocalStack) -> Iterator[StartWorker]:
    """Starts workers on the module's stack, each returned once every one of its processes is
    up (Dramatiq starts the metrics process after the others have booted); any of them still
    running at the end of the test is killed, so that it takes no later test's messages."""
    started: list[ManagedProcess] = []

    def start(*, name: str = "worker", check_processes: int = 1) -> ManagedProcess:
        worker = stack.start_worker(
            processes=1,
            threads=8,
            check_processes=check_processes,
            name=name,
            args=["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)],
        )
        started.append(worker)
        deadline = time.monotonic() + 10
        while len(living(worker)) < 3 + check_processes:
            assert time.monotonic() < deadline, f"not every process started:\n{worker.log_tail()}"
            time.sleep(0.05)
        return worker

    yield start
    for worker in started:
        worker.kill()
        stack.processes.remove(worker)


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command's name: state, ppid, process group..."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def living(worker: ManagedProcess) -> set[int]:
    """The worker's processes that have not exited (zombies have)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, group = _stat(int(entry.name))[:3]
        except (OSError, IndexError):
            continue
        if int(group) == worker.process.pid and state != "Z":
            found.add(int(entry.name))
    return found


def children(worker: ManagedProcess) -> dict[str, int]:
    """The main process's children by role: the verification process runs nicer (--nice 5),
    the exposition's has one thread where a check process has hundreds."""
    pid = worker.process.pid
    pids = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    by_threads = sorted(pids, key=lambda child: len(list(Path(f"/proc/{child}/task").iterdir())))
    verification = next(child for child in pids if os.getpriority(os.PRIO_PROCESS, child) == 5)
    metrics = by_threads[0]
    (check,) = set(pids) - {verification, metrics}
    return {"verification": verification, "check": check, "metrics": metrics}


def seconds_until_gone(worker: ManagedProcess, pids: set[int], *, limit: float) -> float:
    began = time.monotonic()
    while pids & living(worker) and time.monotonic() - began < limit + 10:
        time.sleep(0.1)
    left = pids & living(worker)
    assert not left, f"still running after {limit + 10:.0f}s: {sorted(left)}\n{worker.log_tail()}"
    worker.process.wait(5)
    return time.monotonic() - began


def to_main(worker: ManagedProcess) -> None:
    os.kill(worker.process.pid, signal.SIGTERM)


def to_group(signum: int) -> Callable[[ManagedProcess], None]:
    return lambda worker: os.killpg(worker.process.pid, signum)


def to_children(*roles: str) -> Callable[[ManagedProcess], None]:
    def send(worker: ManagedProcess) -> None:
        found = children(worker)
        for role in roles or found:
            os.kill(found[role], signal.SIGTERM)

    return send


@pytest.mark.parametrize(
    "deliver",
    [
        to_main,
        to_group(signal.SIGTERM),
        to_group(signal.SIGINT),
        to_children(),
        to_children("verification"),
        to_children("check"),
        to_children("metrics"),
    ],
    ids=[
        "SIGTERM to the main process",
        "SIGTERM to the process group",
        "SIGINT to the process group",
        "SIGTERM to every child",
        "SIGTERM to the verification process only",
        "SIGTERM to the check process only",
        "SIGTERM to the metrics process only",
    ],
)
def test_every_process_of_the_worker_ends_within_the_shutdown_timeout(
    start_worker: StartWorker, deliver: Callable[[ManagedProcess], None]
) -> None:
    worker = start_worker()
    processes = living(worker)

    deliver(worker)

    assert seconds_until_gone(worker, processes, limit=SHUTDOWN_TIMEOUT_S + GRACE_S) <= (
        SHUTDOWN_TIMEOUT_S + GRACE_S
    )


def wait_for_the_call(sandbox: Sandbox, phone: str) -> None:
    deadline = time.monotonic() + 10
    while not sandbox.records(phone):
        assert time.monotonic() < deadline, "the call never reached the sandbox"
        time.sleep(0.02)


def attempt_state(producer: Producer, verification_id: str) -> str | None:
    found = producer.client.hget(keys.verification(verification_id), "attempt_state")
    return None if found is None else str(found)


def test_a_call_answered_within_the_shutdown_timeout_is_finished_before_the_worker_exits(
    start_worker: StartWorker, sandbox: Sandbox, producer: Producer
) -> None:
    phone = "79990005001"
    sandbox.script(phone, {"latency_ms": 1500})
    worker = start_worker()
    producer.start("signalled-answered", "+" + phone)
    wait_for_the_call(sandbox, phone)

    os.killpg(worker.process.pid, signal.SIGTERM)
    seconds_until_gone(worker, living(worker), limit=SHUTDOWN_TIMEOUT_S + GRACE_S)

    assert attempt_state(producer, "signalled-answered") == "delivered"
    assert [call["kind"] for call in sandbox.records(phone)] == ["flashcall"]


def test_a_call_in_flight_past_the_shutdown_timeout_is_taken_over_after_a_restart_without_a_second_call(
    start_worker: StartWorker, sandbox: Sandbox, producer: Producer
) -> None:
    phone = "79990005002"
    sandbox.script(phone, {"hang": True})
    worker = start_worker()
    producer.start("signalled-hanging", "+" + phone)
    wait_for_the_call(sandbox, phone)
    claimed = time.monotonic()

    os.killpg(worker.process.pid, signal.SIGTERM)
    seconds_until_gone(worker, living(worker), limit=SHUTDOWN_TIMEOUT_S + GRACE_S)
    # Left as a crash leaves it: the call may have reached the phone.
    assert attempt_state(producer, "signalled-hanging") == "calling"
    start_worker(name="restarted", check_processes=0)

    # At the step's timeout the next step calls; the hanging call is never made again.
    event = producer.wait_for("signalled-hanging", {"delivered"}, timeout=STEP_S + 15)
    assert event["event"] == "delivered"
    assert time.monotonic() - claimed >= STEP_S - 1
    assert [call["kind"] for call in sandbox.records(phone)] == ["flashcall", "voice"]
    code = sandbox.inbox(phone)[-1]["code"]
    assert producer.check("signalled-hanging", code)["result"] == "approved"
