"""A worker claims its metrics directory and port before it empties the directory, and
refuses, touching nothing, when another worker holds either (worker/process/metrics_dir.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashcall_dev.stack import free_port
from worker.core.errors import ConfigurationError
from worker.process import metrics_dir
from worker.process.metrics_dir import LOCK_FILE, claim_metrics


@pytest.fixture(autouse=True)
def release_claims() -> Iterator[None]:
    """Each claim is held for the life of the process: these tests let theirs go after each."""
    yield
    for handle in metrics_dir._held:
        handle.close()
    metrics_dir._held.clear()


def test_a_claim_empties_the_directory_of_an_earlier_run_but_its_lock(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "roles").mkdir()

    claim_metrics(tmp_path, free_port())

    assert [entry.name for entry in tmp_path.iterdir()] == [LOCK_FILE]


def test_a_directory_another_worker_holds_is_refused_with_its_port_and_the_options_to_use(
    tmp_path: Path,
) -> None:
    port = free_port()
    # Another worker's claim as this process sees it: flock conflicts between two open
    # files of one lock file, even within one process.
    claim_metrics(tmp_path, port)
    (tmp_path / "counter_123.db").write_bytes(b"the first worker's")

    with pytest.raises(ConfigurationError) as refused:
        claim_metrics(tmp_path, free_port())

    assert f"metrics on port {port}" in str(refused.value)
    assert str(tmp_path) in str(refused.value)
    assert "--metrics-dir" in str(refused.value)
    assert "--metrics-port" in str(refused.value)
    assert (tmp_path / "counter_123.db").read_bytes() == b"the first worker's"


def test_a_port_in_use_is_refused_before_the_directory_is_emptied(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"kept")
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # noqa: S104 - as Dramatiq's exposition server binds
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(ConfigurationError, match=f"metrics port {port} is in use"):
            claim_metrics(tmp_path, port)

    assert (tmp_path / "counter_123.db").read_bytes() == b"kept"


def test_a_refused_port_leaves_the_directory_free_for_a_worker_on_another(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # noqa: S104
        listener.listen()
        with pytest.raises(ConfigurationError):
            claim_metrics(tmp_path, listener.getsockname()[1])

    claim_metrics(tmp_path, free_port())


def test_a_directory_is_claimed_again_once_its_worker_has_let_it_go(tmp_path: Path) -> None:
    claim_metrics(tmp_path, free_port())
    for handle in metrics_dir._held:
        handle.close()
    metrics_dir._held.clear()

    claim_metrics(tmp_path, free_port())


def test_a_directory_that_does_not_exist_yet_is_made(tmp_path: Path) -> None:
    claim_metrics(tmp_path / "a" / "b", free_port())

    assert (tmp_path / "a" / "b" / LOCK_FILE).is_file()
