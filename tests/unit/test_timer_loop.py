"""The timer loop's pause between passes (worker/process/timers.py): until the next timer
falls due, at most one pass per interval, and never much longer than LONGEST_PAUSE."""

from __future__ import annotations

import pytest

from worker.process.timers import LONGEST_PAUSE, pause_after

NOW = 1_900_000_000_000
INTERVAL = 0.2


def test_the_loop_sleeps_until_the_next_timer_falls_due() -> None:
    assert pause_after(NOW + 300, began_ms=NOW, now_ms=NOW, interval=INTERVAL) == pytest.approx(0.3)


def test_a_timer_due_sooner_waits_for_the_interval_since_the_pass_began() -> None:
    assert pause_after(NOW + 50, began_ms=NOW - 20, now_ms=NOW, interval=INTERVAL) == pytest.approx(0.18)


def test_a_timer_that_fell_due_during_the_pass_waits_for_the_interval_too() -> None:
    assert pause_after(NOW - 1, began_ms=NOW - 5, now_ms=NOW, interval=INTERVAL) == pytest.approx(0.195)


def test_a_full_batch_goes_on_at_once() -> None:
    assert pause_after(NOW - 5, began_ms=NOW - 5, now_ms=NOW, interval=INTERVAL) == 0.0


@pytest.mark.parametrize("next_due_ms", [None, NOW + 600_000])
def test_the_loop_looks_again_within_about_a_second_for_timers_other_processes_add(
    next_due_ms: int | None,
) -> None:
    pauses = [pause_after(next_due_ms, began_ms=NOW, now_ms=NOW, interval=INTERVAL) for _ in range(200)]

    assert 0.8 * LONGEST_PAUSE <= min(pauses) < max(pauses) <= LONGEST_PAUSE


def test_an_interval_longer_than_the_longest_pause_is_kept() -> None:
    assert pause_after(None, began_ms=NOW, now_ms=NOW, interval=5.0) == 5.0
