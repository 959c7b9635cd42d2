"""Liveness from heartbeat files: fresh, stale, missing (worker/process/health.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from worker.process.health import DEFAULT_DIR, HEALTH_DIR, Heartbeat, health_dir, liveness, readiness, waiting

NOW = 1_800_000_000.0


def beat_at(directory: Path, pid: int, when: float) -> Path:
    heartbeat = Heartbeat(directory, pid=pid)
    heartbeat.beat()
    os.utime(heartbeat.path, (when, when))
    return heartbeat.path


def test_a_heartbeat_younger_than_the_limit_is_alive(tmp_path: Path) -> None:
    beat_at(tmp_path, 1, NOW - 10)

    assert liveness(tmp_path, max_age=30, now=lambda: NOW) is None


def test_a_heartbeat_older_than_the_limit_is_not_alive(tmp_path: Path) -> None:
    beat_at(tmp_path, 1, NOW - 31)

    problem = liveness(tmp_path, max_age=30, now=lambda: NOW)

    assert problem == "the freshest worker process heartbeat is 31 s old (limit 30 s)"


def test_one_fresh_process_is_enough_beside_stale_ones(tmp_path: Path) -> None:
    beat_at(tmp_path, 1, NOW - 300)
    beat_at(tmp_path, 2, NOW - 1)

    assert liveness(tmp_path, max_age=30, now=lambda: NOW) is None


def test_no_heartbeat_at_all_is_not_alive(tmp_path: Path) -> None:
    problem = liveness(tmp_path, max_age=30, now=lambda: NOW)

    assert problem is not None
    assert "no worker process heartbeat" in problem


def test_a_missing_directory_is_not_alive(tmp_path: Path) -> None:
    assert liveness(tmp_path / "absent", max_age=30, now=lambda: NOW) is not None


def test_files_that_are_not_heartbeats_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")

    assert liveness(tmp_path, max_age=1e9) is not None


def test_each_process_beats_in_a_file_named_after_its_pid(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / "health")

    heartbeat.beat()

    assert heartbeat.path == tmp_path / "health" / f"{os.getpid()}.alive"
    assert heartbeat.path.exists()


def test_a_removed_heartbeat_no_longer_counts(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path)
    heartbeat.beat()

    heartbeat.remove()

    assert liveness(tmp_path, max_age=30) is not None


def test_the_heartbeat_task_beats_until_cancelled(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path, pid=7)

    async def run_briefly() -> None:
        task = asyncio.create_task(heartbeat.run(interval=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_briefly())

    assert liveness(tmp_path, max_age=5) is None


def test_the_directory_comes_from_the_environment_or_defaults() -> None:
    assert health_dir({HEALTH_DIR: "/run/health"}) == Path("/run/health")
    assert health_dir({}) == Path(DEFAULT_DIR)


def test_a_process_waiting_to_boot_says_what_it_waits_for(tmp_path: Path) -> None:
    Heartbeat(tmp_path, pid=7).waiting("waiting for Redis (3 s so far): ConnectionError: refused")

    problem = waiting(tmp_path, max_age=30)

    assert (
        problem == "worker process 7 has not booted: waiting for Redis (3 s so far): ConnectionError: refused"
    )


def test_a_process_that_has_booted_no_longer_waits(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path, pid=7)
    heartbeat.waiting("waiting for Redis")

    heartbeat.booted()

    assert waiting(tmp_path, max_age=30) is None


def test_a_waiting_marker_older_than_the_limit_is_a_killed_process_s_and_ignored(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path, pid=7)
    heartbeat.waiting("waiting for Redis")
    os.utime(heartbeat.waiting_path, (NOW - 31, NOW - 31))

    assert waiting(tmp_path, max_age=30, now=lambda: NOW) is None


def test_a_process_waiting_to_boot_is_alive(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path, pid=7)
    heartbeat.waiting("waiting for Redis")
    heartbeat.beat()

    assert liveness(tmp_path, max_age=30) is None


def test_a_clean_stop_removes_the_waiting_marker_too(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path, pid=7)
    heartbeat.beat()
    heartbeat.waiting("waiting for Redis")

    heartbeat.remove()

    assert list(tmp_path.iterdir()) == []


def test_readiness_fails_while_a_process_waits_to_boot_before_asking_redis(tmp_path: Path) -> None:
    Heartbeat(tmp_path, pid=7).waiting("waiting for Redis")

    # A URL no Redis answers: the waiting process is the answer, not the probe's own PING.
    problem = readiness("redis://127.0.0.1:1/0", Path("routing.yaml"), directory=tmp_path)

    assert problem == "worker process 7 has not booted: waiting for Redis"
