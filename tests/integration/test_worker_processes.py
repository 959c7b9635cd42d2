"""`flashcall worker`'s processes: check processes apart from verification processes."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port

pytestmark = pytest.mark.integration


def children(worker: ManagedProcess) -> list[int]:
    pid = worker.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_the_verification_processes_run_nicer_than_the_check_process(worker: ManagedProcess) -> None:
    # The session worker: one verification process, one check process, Dramatiq's
    # metrics exposition fork; the default --nice is 5.
    nice = sorted(os.getpriority(os.PRIO_PROCESS, pid) for pid in children(worker))

    assert nice.count(5) == 1
    assert nice.count(0) >= 1


def test_queues_cannot_be_chosen_while_check_processes_choose_them(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "worker", "worker", "--queues", "verifications"]
    argv += ["--metrics-dir", str(tmp_path / "metrics")]

    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    assert done.returncode != 0
    assert "--check-processes 0" in done.stderr
    assert not (tmp_path / "metrics").exists()


def test_a_second_worker_on_the_metrics_directory_and_port_of_another_refuses_and_leaves_them(
    stack: LocalStack, tmp_path: Path
) -> None:
    port = free_port()
    first = stack.start_worker(
        processes=1, threads=4, check_processes=0, name="metrics-owner", metrics_port=port
    )
    directory = stack.log_dir / "metrics-owner-metrics"
    argv = [sys.executable, "-m", "worker", "worker", "--processes", "1", "--check-processes", "0"]
    argv += ["--metrics-dir", str(directory), "--metrics-port", str(port)]

    second = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=stack.worker_env()
    )

    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("flashcall: "), second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"port {port}" in second.stderr
    assert str(directory) in second.stderr
    assert "--metrics-dir" in second.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert "flashcall_" in response.read().decode()
    first.stop()
