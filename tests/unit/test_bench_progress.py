"""The progress of long benchmark runs: a redrawn line on a terminal, plain lines in a log."""

from __future__ import annotations

import io

import pytest

from bench import progress
from bench.progress import Progress, echo, format_duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_stamp", str)


def reporter(stream: io.StringIO, clock: Clock, done: list[float], every_s: float = 10.0) -> Progress:
    return Progress(
        "runs",
        500,
        lambda: done[0],
        unit="verifications",
        clock=clock,
        stream=stream,
        width=200,
        every_s=every_s,
    )


def test_the_eta_is_what_is_left_at_the_rate_so_far() -> None:
    counted = Progress("runs", 500, lambda: 0)
    assert counted.eta_s(done=100, elapsed=10) == pytest.approx(40)


def test_there_is_no_eta_before_anything_was_done() -> None:
    assert Progress("runs", 500, lambda: 0).eta_s(done=0, elapsed=10) is None


def test_a_finished_phase_has_nothing_left() -> None:
    assert Progress("runs", 500, lambda: 0).eta_s(done=520, elapsed=10) == 0


def test_durations_read_as_a_clock() -> None:
    assert [format_duration(s) for s in (5, 125, 3725)] == ["0:05", "2:05", "1:02:05"]


def test_a_terminal_line_shows_the_bar_and_the_count_then_the_eta_then_the_rate() -> None:
    clock, done = Clock(), [100.0]
    shown = reporter(Terminal(), clock, done)
    clock.now += 10
    assert shown.line() == "runs [####................]  20% 100/500 verifications, ETA 0:40, 10.0/s"


def test_a_terminal_line_redraws_in_place_over_the_previous_one() -> None:
    terminal, clock, done = Terminal(), Clock(), [400.0]
    shown = reporter(terminal, clock, done).start()
    try:
        clock.now += 10
        shown.tick()
        done[0] = 5
        shown.tick()
    finally:
        shown.stop()
    first, second = terminal.getvalue().split("\r")[1:3]
    assert "\n" not in first + second
    assert len(second) == len(first), "the shorter line blanks what the longer one left"


def test_the_final_line_replaces_the_terminal_line_and_stays() -> None:
    terminal, clock, done = Terminal(), Clock(), [0.0]
    with reporter(terminal, clock, done) as shown:
        shown.tick()
        clock.now += 10
        done[0] = 500
    assert terminal.getvalue().endswith("\rruns: 500/500 verifications in 0:10, 50.0/s\n")


def test_a_log_gets_a_plain_line_every_interval_and_none_in_between() -> None:
    log, clock, done = io.StringIO(), Clock(), [100.0]
    counted = reporter(log, clock, done, every_s=10.0)
    for _ in range(4):
        clock.now += 5
        counted.tick()
    assert log.getvalue().splitlines() == [
        "runs: 100/500 verifications (20%), 10.0/s, ETA 0:40",
        "runs: 100/500 verifications (20%), 5.0/s, ETA 1:20",
    ]


def test_a_log_line_holds_no_carriage_return_or_bar() -> None:
    log, clock = io.StringIO(), Clock()
    with reporter(log, clock, [250.0], every_s=0.0) as counted:
        clock.now += 5
        counted.tick()
    assert "\r" not in log.getvalue()
    assert "#" not in log.getvalue()


def test_a_phase_in_seconds_shows_elapsed_of_total_and_the_live_figures() -> None:
    clock = Clock()
    soaked = Progress(
        "soak",
        1800,
        lambda: clock.now - 1000,
        duration=True,
        figures=lambda: "40.0/s",
        clock=clock,
        stream=io.StringIO(),
    )
    clock.now += 600
    assert soaked.line() == "soak: 10:00/30:00 (33%), ETA 20:00; 40.0/s"


def test_simulated_time_shows_its_speed_up() -> None:
    clock = Clock()
    simulated = Progress("simulate", 36_000, lambda: 3600, unit="simulated", duration=True, clock=clock)
    clock.now += 60
    assert simulated.line(final=True) == "simulate: 1:00:00/10:00:00 simulated in 1:00, 60x"


def test_a_figure_that_cannot_be_read_leaves_the_line_standing() -> None:
    def broken() -> str:
        raise ConnectionError("Redis is away")

    clock = Clock()
    counted = Progress("soak", 10, lambda: 5, figures=broken, clock=clock, stream=io.StringIO())
    clock.now += 5
    assert counted.line() == "soak: 5/10 (50%), 1.0/s, ETA 0:05"


def test_a_phase_line_clears_the_progress_line_and_it_is_drawn_again_below() -> None:
    terminal, clock = Terminal(), Clock()
    with reporter(terminal, clock, [100.0]) as shown:
        clock.now += 10
        shown.tick()
        echo("[  10.0s] breaker overhead", terminal)
        before_final = terminal.getvalue()
    cleared, phase_line = before_final.split("\n")[0].rsplit("\r", 2)[1:]
    assert cleared.strip() == ""
    assert phase_line == "[  10.0s] breaker overhead"
    assert before_final.split("\n")[1].startswith("\rruns [####")


def test_only_the_latest_reporter_draws_on_a_terminal() -> None:
    terminal, clock = Terminal(), Clock()
    with reporter(terminal, clock, [1.0]) as outer, reporter(terminal, clock, [2.0]) as inner:
        terminal.truncate(0)
        terminal.seek(0)
        outer.tick()
        inner.tick()
        drawn = terminal.getvalue()
    assert "2/500" in drawn
    assert "1/500" not in drawn
