"""How `flashcall worker`'s processes split into check processes and verification
processes (worker/process/middleware/roles.py). Unit tests: a stand-in for Dramatiq's Worker,
and os.nice recorded instead of applied (a test process cannot undo it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from worker.core import keys
from worker.core.errors import ConfigurationError
from worker.process.middleware import roles
from worker.process.middleware.roles import CHECK_THREADS, ProcessRoles


def dramatiq_worker() -> Any:
    return SimpleNamespace(consumer_whitelist=None, worker_threads=512, queue_prefetch=1024)


@pytest.fixture
def niced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr("os.nice", calls.append)
    return calls


@pytest.fixture
def two_check_slots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(roles.CHECK_PROCESSES, "2")
    monkeypatch.setenv(roles.WORKER_NICE, "5")
    monkeypatch.setenv(roles.ROLES_DIR, str(tmp_path))


_booted: list[ProcessRoles] = []


@pytest.fixture(autouse=True)
def processes_exit() -> Iterator[None]:
    """Each test's processes hold their slots until it ends, as live processes would."""
    yield
    _booted.clear()


def boot(middleware: ProcessRoles | None = None) -> Any:
    worker = dramatiq_worker()
    middleware = middleware or ProcessRoles()
    _booted.append(middleware)
    middleware.before_worker_boot(broker=None, worker=worker)  # type: ignore[arg-type]
    return worker


@pytest.mark.usefixtures("two_check_slots")
def test_the_first_processes_to_boot_take_the_check_slots(niced: list[int]) -> None:
    first, second = boot(), boot()

    for worker in (first, second):
        assert worker.consumer_whitelist == {keys.CHECK_QUEUE}
        assert worker.worker_threads == CHECK_THREADS
        assert worker.queue_prefetch == 2 * CHECK_THREADS
    assert niced == []


@pytest.mark.usefixtures("two_check_slots")
def test_a_process_that_finds_the_slots_taken_makes_verification_calls_at_lower_priority(
    niced: list[int],
) -> None:
    boot(), boot()

    third = boot()

    assert third.consumer_whitelist == {keys.VERIFY_QUEUE}
    assert third.worker_threads == 512
    assert niced == [5]


@pytest.mark.usefixtures("two_check_slots")
def test_a_slot_whose_process_exited_is_taken_by_the_next_to_boot(niced: list[int]) -> None:
    holder = ProcessRoles()
    boot(holder), boot()
    assert holder._slot is not None
    holder._slot.close()  # what the kernel does when the process exits

    assert boot().consumer_whitelist == {keys.CHECK_QUEUE}


def test_without_check_processes_every_process_takes_every_queue(
    monkeypatch: pytest.MonkeyPatch, niced: list[int]
) -> None:
    monkeypatch.delenv(roles.CHECK_PROCESSES, raising=False)

    worker = boot()

    assert worker.consumer_whitelist is None
    assert worker.worker_threads == 512
    assert niced == []


@pytest.mark.parametrize(("variable", "value"), [(roles.CHECK_PROCESSES, "-1"), (roles.WORKER_NICE, "20")])
@pytest.mark.usefixtures("two_check_slots", "niced")
def test_a_setting_out_of_range_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    boot(), boot()
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=variable):
        boot()


def test_check_processes_without_a_roles_directory_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(roles.CHECK_PROCESSES, "1")
    monkeypatch.delenv(roles.ROLES_DIR, raising=False)

    with pytest.raises(ConfigurationError, match=roles.ROLES_DIR):
        boot()


def test_the_first_process_to_ask_is_its_workers_reporter_until_it_exits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(roles.ROLES_DIR, str(tmp_path))
    monkeypatch.setattr(roles, "_held", [])

    assert [roles.claim_reporter(), roles.claim_reporter()] == [True, False]
    roles._held[0].close()  # what the kernel does when the process exits
    assert roles.claim_reporter() is True


def test_outside_flashcall_worker_every_process_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(roles.ROLES_DIR, raising=False)

    assert [roles.claim_reporter(), roles.claim_reporter()] == [True, True]
