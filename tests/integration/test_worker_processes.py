"""`flashcall worker`'s processes: check processes apart from verification processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flashcall_dev.stack import ManagedProcess

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
