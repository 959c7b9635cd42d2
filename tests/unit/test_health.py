"""Liveness from heartbeat files: fresh, stale, missing (worker/process/health.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from worker.process.health import DEFAULT_DIR, HEALTH_DIR, Heartbeat, health_dir, liveness

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
