"""Start order does not matter: a worker started before Redis waits for it, alive but not
ready, and once Redis answers installs the library, boots and verifies, dead-lettering
nothing (worker/process/middleware/boot.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port, local_stack, redis_server
from tests.conftest import TEST_ROUTING
from tests.support import Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = pytest.mark.integration

#: How long Redis stays away after the worker started: several of its boot attempts.
AWAY_S = 6


@dataclass(frozen=True)
class Story:
    stack: LocalStack
    worker: ManagedProcess
    health_dir: Path
    live_before: subprocess.CompletedProcess[str]
    ready_before: subprocess.CompletedProcess[str]
    library_before: bool
    ready_after: subprocess.CompletedProcess[str]


def health(story_dir: Path, stack: LocalStack, *options: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "worker", "health", "--dir", str(story_dir), *options]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, env=stack.worker_env()
    )


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def has_library(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.function_list(library="flashcall"))
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The worker first, on a Redis port nobody listens on yet; Redis AWAY_S later."""
    # The port stays bound, not listening, until Redis takes it: connections to it are
    # refused, as to a Redis not started yet, and no other process of the run (the sandbox)
    # is given it meanwhile, as it could be a port only picked.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    health_dir = tmp_path_factory.mktemp("health")
    with contextlib.closing(holder), local_stack(redis_url=url, routing_path=TEST_ROUTING) as stack:
        argv = [sys.executable, "-m", "worker", "worker", "--processes", "1", "--check-processes", "1"]
        argv += ["--threads", "8", "--metrics-port", str(free_port())]
        argv += ["--metrics-dir", str(stack.log_dir / "worker-metrics")]
        worker = stack.spawn("worker", argv, stack.worker_env({"FLASHCALL_HEALTH_DIR": str(health_dir)}))
        assert eventually(lambda: len(list(health_dir.glob("*.waiting"))) == 2, timeout=30), worker.log_tail()
        time.sleep(AWAY_S)
        live_before = health(health_dir, stack)
        ready_before = health(health_dir, stack, "--ready")
        library_before = has_library(url)
        holder.close()
        with redis_server(stack.log_dir, port=port):
            assert eventually(lambda: has_library(url), timeout=30), worker.log_tail()
            assert eventually(lambda: health(health_dir, stack, "--ready").returncode == 0, timeout=30)
            ready_after = health(health_dir, stack, "--ready")
            yield Story(stack, worker, health_dir, live_before, ready_before, library_before, ready_after)
            worker.stop()


def test_before_redis_answers_the_worker_is_alive(story: Story) -> None:
    assert story.live_before.returncode == 0, story.live_before.stderr
    assert story.worker.process.poll() is None


def test_before_redis_answers_the_worker_is_not_ready_and_says_it_waits_for_redis(story: Story) -> None:
    assert story.ready_before.returncode == 1
    assert "waiting for Redis" in story.ready_before.stderr
    assert len(story.ready_before.stderr.strip().splitlines()) == 1


def test_once_redis_answers_the_worker_installs_the_library(story: Story) -> None:
    assert not story.library_before
    assert has_library(story.stack.redis_url)


def test_once_booted_the_worker_is_ready(story: Story) -> None:
    assert story.ready_after.returncode == 0, story.ready_after.stderr


def test_a_verification_started_once_redis_answers_is_approved_end_to_end(
    story: Story, verification_id: str, phone: str
) -> None:
    producer = Producer.from_url(story.stack.redis_url)
    sandbox = Sandbox(story.stack.sandbox_url)
    try:
        producer.start(verification_id, "+" + phone)
        assert producer.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
        answer = producer.check(verification_id, sandbox.inbox(phone)[-1]["code"])
    finally:
        producer.close()
        sandbox.close()

    assert answer["result"] == "approved"


def test_nothing_is_dead_lettered(story: Story) -> None:
    client = redis.Redis.from_url(story.stack.redis_url)
    try:
        dead = {
            queue: client.zcard(keys.dead_letters(queue)) for queue in (keys.VERIFY_QUEUE, keys.CHECK_QUEUE)
        }
    finally:
        client.close()

    assert dead == {keys.VERIFY_QUEUE: 0, keys.CHECK_QUEUE: 0}


def test_while_it_waits_each_process_warns_once_per_interval_not_at_every_attempt(story: Story) -> None:
    lines = [
        json.loads(line) for line in story.worker.log_path.read_text().splitlines() if line.startswith("{")
    ]
    warnings = [line for line in lines if line["event"].startswith("worker process waiting for Redis")]

    # Two processes, each waiting about AWAY_S seconds: well within one 30 s interval.
    assert len(warnings) == 2
    assert not [line for line in lines if "Restarting consumer" in line["event"]]
