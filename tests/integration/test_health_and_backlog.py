"""`flashcall health` against a running worker, and the backlog that autoscaling reads.

The health checks run against a worker of their own (own redis-server, own heartbeat
directory). The backlog is read from the library on a redis-server of its own, with
Dramatiq's keys written directly, so that every count is known.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port
from tests.conftest import TEST_ROUTING
from tests.support import OwnStack
from worker.core import keys
from worker.redis import functions

pytestmark = pytest.mark.integration

NOW_MS = 1_900_000_000_000


@dataclass(frozen=True)
class Running:
    stack: LocalStack
    worker: ManagedProcess
    health_dir: Path
    metrics_port: int


@pytest.fixture(scope="module")
def running(own_stack: OwnStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    health_dir = tmp_path_factory.mktemp("health")
    port = free_port()
    with own_stack(TEST_ROUTING.read_text(encoding="utf-8")) as stack:
        worker = stack.start_worker(
            processes=1,
            threads=8,
            check_processes=0,
            metrics_port=port,
            env={"FLASHCALL_HEALTH_DIR": str(health_dir)},
        )
        yield Running(stack, worker, health_dir, port)


def health(*options: str, env_of: LocalStack | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "worker", "health", *options]
    env = env_of.worker_env() if env_of is not None else None
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)


def test_health_passes_while_the_worker_runs(running: Running) -> None:
    done = health("--dir", str(running.health_dir))

    assert done.returncode == 0, done.stderr


def test_ready_passes_while_redis_answers_and_the_routing_file_loads(running: Running) -> None:
    done = health("--ready", "--dir", str(running.health_dir), env_of=running.stack)

    assert done.returncode == 0, done.stderr


def test_ready_fails_with_one_line_when_redis_does_not_answer(running: Running) -> None:
    unused = f"redis://127.0.0.1:{free_port()}/0"

    done = health("--ready", "--dir", str(running.health_dir), "--redis-url", unused, env_of=running.stack)

    assert done.returncode == 1
    assert "Redis does not answer" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_ready_fails_when_the_routing_file_does_not_load(running: Running, tmp_path: Path) -> None:
    broken = tmp_path / "routing.yaml"
    broken.write_text("providers: [", encoding="utf-8")

    done = health("--ready", "--dir", str(running.health_dir), "--file", str(broken), env_of=running.stack)

    assert done.returncode == 1
    assert "routing file" in done.stderr


def test_health_fails_once_the_worker_has_stopped(running: Running, tmp_path: Path) -> None:
    worker = running.stack.start_worker(
        processes=1,
        threads=4,
        check_processes=0,
        name="stopped-worker",
        env={"FLASHCALL_HEALTH_DIR": str(tmp_path)},
    )
    assert health("--dir", str(tmp_path)).returncode == 0

    worker.stop()

    done = health("--dir", str(tmp_path))
    assert done.returncode == 1
    assert "heartbeat" in done.stderr


def test_the_worker_exports_the_backlog_per_queue(running: Running) -> None:
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()

    assert 'flashcall_backlog{queue="verifications"}' in text
    assert 'flashcall_backlog{queue="checks"}' in text


def stats(library: redis.Redis) -> Any:
    return functions.queue_stats(now_ms=NOW_MS).run(library)


def test_the_backlog_counts_messages_waiting_in_the_list(library: redis.Redis) -> None:
    library.rpush(keys.queue(keys.VERIFY_QUEUE), "m1", "m2")

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 2


def test_the_backlog_counts_delayed_messages(library: redis.Redis) -> None:
    library.rpush(keys.queue(keys.VERIFY_QUEUE) + ".DQ", "d1", "d2", "d3")

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 3


def test_the_backlog_counts_messages_fetched_but_not_acknowledged(library: redis.Redis) -> None:
    library.zadd(keys.heartbeats(), {"worker-a": NOW_MS, "worker-b": NOW_MS})
    library.sadd(keys.consumer_acks("worker-a", keys.VERIFY_QUEUE), "m1", "m2")
    library.sadd(keys.consumer_acks("worker-b", keys.VERIFY_QUEUE), "m3")

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 3


def test_the_backlog_counts_delayed_messages_a_consumer_holds(library: redis.Redis) -> None:
    library.zadd(keys.heartbeats(), {"worker-a": NOW_MS})
    library.sadd(keys.consumer_acks("worker-a", keys.VERIFY_QUEUE + ".DQ"), "d1")

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 1


def test_the_backlog_counts_step_and_poll_timers_due_now_but_not_later_ones(library: redis.Redis) -> None:
    library.zadd(f"{keys.TIMERS}:step", {"due": NOW_MS, "later": NOW_MS + 1})
    library.zadd(f"{keys.TIMERS}:poll", {"due": NOW_MS - 5000, "later": NOW_MS + 60_000})

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 2


def test_expiry_timers_are_not_backlog(library: redis.Redis) -> None:
    library.zadd(f"{keys.TIMERS}:expire", {"due": NOW_MS - 1})

    assert stats(library)["backlog"][keys.VERIFY_QUEUE] == 0


def test_each_queue_has_a_backlog_of_its_own(library: redis.Redis) -> None:
    library.zadd(keys.heartbeats(), {"worker-a": NOW_MS})
    library.rpush(keys.queue(keys.CHECK_QUEUE), "c1")
    library.sadd(keys.consumer_acks("worker-a", keys.CHECK_QUEUE), "c2")
    library.zadd(f"{keys.TIMERS}:step", {"due": NOW_MS})

    backlog = stats(library)["backlog"]

    assert backlog == {keys.VERIFY_QUEUE: 1, keys.CHECK_QUEUE: 2}


def test_the_queued_count_stays_the_list_alone(library: redis.Redis) -> None:
    library.zadd(keys.heartbeats(), {"worker-a": NOW_MS})
    library.rpush(keys.queue(keys.VERIFY_QUEUE), "m1")
    library.rpush(keys.queue(keys.VERIFY_QUEUE) + ".DQ", "d1")
    library.sadd(keys.consumer_acks("worker-a", keys.VERIFY_QUEUE), "m2")

    answer = stats(library)

    assert answer["queued"][keys.VERIFY_QUEUE] == 1
    assert answer["backlog"][keys.VERIFY_QUEUE] == 3


def test_without_a_clock_the_backlog_uses_redis_time(library: redis.Redis) -> None:
    library.zadd(f"{keys.TIMERS}:step", {"long-due": 1})

    answer = functions.queue_stats().run(library)

    assert answer["backlog"][keys.VERIFY_QUEUE] == 1
