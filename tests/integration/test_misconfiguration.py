"""`flashcall worker` and `flashcall callbacks` misconfigured: one line, exit status 2, nothing consumed.

A worker process whose boot failed used to log it, announce itself ready, and dead-letter
every message it took. Here a verification is queued before each worker starts, on a
stack with no other worker, and is still queued, untouched, once the worker has exited.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis

from flashcall_dev.stack import LocalStack, free_port
from tests.conftest import TEST_ROUTING
from tests.support import OwnStack
from worker.client import Producer
from worker.core import keys
from worker.redis.library import install

pytestmark = pytest.mark.integration

#: Bounds the wait for a process expected to exit; not a timing that is asserted.
EXIT_WITHIN = 60.0


@pytest.fixture(scope="module")
def quiet_stack(own_stack: OwnStack) -> Iterator[LocalStack]:
    """Redis with the library loaded, the sandbox, and no worker to take what is queued."""
    with own_stack(TEST_ROUTING.read_text(encoding="utf-8")) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        install(client)
        client.close()
        yield stack


@pytest.fixture
def quiet_producer(quiet_stack: LocalStack) -> Iterator[Producer]:
    client = Producer.from_url(quiet_stack.redis_url)
    yield client
    client.close()


@dataclass(frozen=True)
class Exited:
    status: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run(stack: LocalStack, command: list[str], env: Mapping[str, str], name: str) -> Exited:
    """Run `flashcall <command>` until it exits; its output (stdout and stderr) by line."""
    # A log of its own: the stack's log directory outlives each test.
    process = stack.spawn(f"{name}-{secrets.token_hex(4)}", [sys.executable, "-m", "worker", *command], env)
    try:
        status = process.process.wait(EXIT_WITHIN)
    finally:
        process.stop()
    return Exited(status, process.log_path.read_text(errors="replace").splitlines())


def worker_command(tmp_path: Path, *, metrics_port: bool = True) -> list[str]:
    command = ["worker", "--processes", "1", "--check-processes", "1", "--threads", "4",
               "--metrics-dir", str(tmp_path / "metrics")]  # fmt: skip
    return [*command, "--metrics-port", str(free_port())] if metrics_port else command


@dataclass(frozen=True)
class Queues:
    """What a worker would have changed had it taken a message."""

    queued: list[str]
    dead: int
    heartbeats: set[str]
    """Consumers that ever fetched: Dramatiq's fetch records its consumer's heartbeat."""


def queues(producer: Producer) -> Queues:
    client = producer.client
    return Queues(
        queued=cast(list[str], client.lrange(keys.queue(keys.VERIFY_QUEUE), 0, -1)),
        dead=client.zcard(keys.dead_letters(keys.VERIFY_QUEUE)),
        heartbeats=set(cast(list[str], client.zrange(keys.heartbeats(), 0, -1))),
    )


@dataclass(frozen=True)
class Queued:
    verification_id: str
    before: Queues


@pytest.fixture
def queued(quiet_producer: Producer, verification_id: str, phone: str) -> Queued:
    """A verification queued before the test's worker starts."""
    quiet_producer.start(verification_id, "+" + phone)
    return Queued(verification_id, queues(quiet_producer))


def assert_untouched(producer: Producer, queued: Queued) -> None:
    """Still pending, its message still queued; nothing dead-lettered, nothing fetched."""
    assert queues(producer) == queued.before
    assert producer.status(queued.verification_id)["status"] == "pending"
    assert [event["event"] for event in producer.events(queued.verification_id)] == ["created"]


def broken_routing(tmp_path: Path, mistakes: int = 1) -> tuple[Path, list[int]]:
    """The test routing with timeouts that are not durations; the file and their lines."""
    lines = TEST_ROUTING.read_text(encoding="utf-8").splitlines()
    wrong = [number for number, line in enumerate(lines) if line == "    timeout: 2s"][:mistakes]
    for number in wrong:
        lines[number] = "    timeout: soon"
    path = tmp_path / "routing.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [number + 1 for number in wrong]


SHORT_SECRET = "short-" + secrets.token_hex(2)

#: name -> (environment changes, None removing a variable; what the one line names)
MISCONFIGURED: dict[str, tuple[dict[str, str | None], str]] = {
    "no code secret": ({"FLASHCALL_CODE_SECRET": None}, "FLASHCALL_CODE_SECRET must be set"),
    "a short code secret": ({"FLASHCALL_CODE_SECRET": SHORT_SECRET}, "FLASHCALL_CODE_SECRET must be set"),
    "a short previous secret": (
        {"FLASHCALL_CODE_SECRET_PREVIOUS": SHORT_SECRET},
        "FLASHCALL_CODE_SECRET_PREVIOUS: secret number 1",
    ),
    "a provider credential unset": (
        {"VOICEPASSWORD_API_KEY": None},
        "environment variable VOICEPASSWORD_API_KEY (its api_key) is not set",
    ),
    "no routing file": ({"FLASHCALL_ROUTING": "/nonexistent/routing.yaml"}, "/nonexistent/routing.yaml"),
    "an interval that is not a number": (
        {"FLASHCALL_TIMER_INTERVAL_MS": "fast"},
        "FLASHCALL_TIMER_INTERVAL_MS must be a positive integer",
    ),
    "a pool size of zero": ({"FLASHCALL_REDIS_POOL_SIZE": "0"}, "FLASHCALL_REDIS_POOL_SIZE"),
    "a callback root without a scheme": (
        {"FLASHCALL_CALLBACK_BASE_URL": "callbacks.example.com"},
        "FLASHCALL_CALLBACK_BASE_URL must be the public http(s) root",
    ),
    "a Redis URL of another scheme": ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL must name"),
    "an unknown log level": ({"FLASHCALL_LOG_LEVEL": "LOUD"}, "FLASHCALL_LOG_LEVEL must be"),
    "a metrics port that is not a port": ({"FLASHCALL_METRICS_PORT": "nine"}, "FLASHCALL_METRICS_PORT"),
}


def changed(env: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    out = dict(env)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def assert_one_line(exited: Exited, names: str) -> None:
    assert exited.status == 2, exited.text
    assert len(exited.lines) == 1, exited.text
    assert exited.lines[0].startswith("flashcall: ")
    assert names in exited.lines[0]
    assert SHORT_SECRET not in exited.text


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_a_misconfigured_worker_exits_with_one_line_before_taking_any_message(
    quiet_stack: LocalStack, quiet_producer: Producer, queued: Queued, tmp_path: Path, case: str
) -> None:
    changes, names = MISCONFIGURED[case]
    command = worker_command(tmp_path, metrics_port="FLASHCALL_METRICS_PORT" not in changes)

    exited = run(quiet_stack, command, changed(quiet_stack.worker_env(), changes), "misconfigured")

    assert_one_line(exited, names)
    assert_untouched(quiet_producer, queued)
    assert not (tmp_path / "metrics").exists()


def test_a_worker_with_a_mistake_in_its_routing_file_names_the_file_and_line(
    quiet_stack: LocalStack, quiet_producer: Producer, queued: Queued, tmp_path: Path
) -> None:
    path, [line] = broken_routing(tmp_path)
    env = quiet_stack.worker_env({"FLASHCALL_ROUTING": str(path)})

    exited = run(quiet_stack, worker_command(tmp_path), env, "bad-routing")

    assert_one_line(exited, f"{path}:{line}: providers.vp-main.timeout: a duration")
    assert_untouched(quiet_producer, queued)


def test_each_mistake_in_the_routing_file_is_a_line_of_its_own(
    quiet_stack: LocalStack, tmp_path: Path
) -> None:
    path, lines = broken_routing(tmp_path, mistakes=2)
    env = quiet_stack.worker_env({"FLASHCALL_ROUTING": str(path)})

    exited = run(quiet_stack, worker_command(tmp_path), env, "bad-routing")

    assert exited.status == 2
    assert [line.split(": ")[:2] for line in exited.lines] == [["flashcall", f"{path}:{n}"] for n in lines]


def test_a_verification_queued_before_a_misconfigured_worker_completes_with_a_good_one(
    quiet_stack: LocalStack, quiet_producer: Producer, verification_id: str, phone: str, tmp_path: Path
) -> None:
    quiet_producer.start(verification_id, "+" + phone)
    env = changed(quiet_stack.worker_env(), {"FLASHCALL_CODE_SECRET": None})
    assert run(quiet_stack, worker_command(tmp_path), env, "secretless").status == 2

    good = quiet_stack.start_worker(processes=1, threads=8, check_processes=0, name="good-worker")
    try:
        assert quiet_producer.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
    finally:
        good.stop()


def add_user_without_function_load(client: redis.Redis, user: str, password: str) -> None:
    """The worker user of deploy/redis/users.acl without `function|load`, as an ACL written
    before workers loaded the library themselves would have it."""
    client.acl_setuser(
        user,
        enabled=True,
        reset=True,
        passwords=[f"+{password}"],
        keys=["flashcall", "flashcall:*"],
        reset_channels=True,
        categories=["+@all", "-@dangerous", "-@scripting"],
        commands=["+fcall", "+fcall_ro", "+evalsha", "+script|load", "+script|exists", "+keys"],
    )


def test_a_worker_process_whose_boot_fails_exits_without_fetching_a_message(
    quiet_stack: LocalStack, quiet_producer: Producer, queued: Queued, tmp_path: Path
) -> None:
    # The parent cannot see this one (it connects nowhere): each process fails on it at boot,
    # when it loads the library, while Dramatiq's consumers could otherwise fetch fine.
    user, password = f"noload-{secrets.token_hex(3)}", secrets.token_hex(16)
    add_user_without_function_load(quiet_producer.client, user, password)
    url = quiet_stack.redis_url.replace("redis://", f"redis://{user}:{password}@", 1)

    exited = run(quiet_stack, worker_command(tmp_path), quiet_stack.worker_env({"REDIS_URL": url}), "noload")

    assert exited.status == 3, exited.text
    refusals = [
        json.loads(line)
        for line in exited.lines
        if line.startswith("{") and "worker process cannot start" in line
    ]
    assert refusals, exited.text
    assert all("function|load" in refusal["error"] for refusal in refusals)
    assert password not in exited.text
    assert "Worker process is ready for action" not in exited.text
    assert_untouched(quiet_producer, queued)


CALLBACKS_MISCONFIGURED: dict[str, tuple[dict[str, str | None], list[str], str]] = {
    "an unknown log level": ({"FLASHCALL_LOG_LEVEL": "LOUD"}, [], "FLASHCALL_LOG_LEVEL must be"),
    "a Redis URL of another scheme": ({"REDIS_URL": "http://127.0.0.1:6379"}, [], "REDIS_URL must name"),
    "a port out of range": ({}, ["--port", "70000"], "--port must be a port from 1 to 65535"),
}


@pytest.mark.parametrize("case", list(CALLBACKS_MISCONFIGURED))
def test_a_misconfigured_callback_receiver_exits_with_one_line(quiet_stack: LocalStack, case: str) -> None:
    changes, options, names = CALLBACKS_MISCONFIGURED[case]
    command = ["callbacks", "--host", "127.0.0.1", "--port", str(free_port()), *options]

    exited = run(quiet_stack, command, changed(quiet_stack.worker_env(), changes), "callbacks")

    assert_one_line(exited, names)
