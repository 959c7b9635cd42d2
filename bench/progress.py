"""Progress of a long run, for the operator watching it: done of total, rate and ETA.

On a terminal one line redraws itself in place (`\\r`, a bar); anywhere else (CI logs, a
file) a plain line every `every_s` seconds, so that a log stays readable. Phase lines go
through `echo`, which clears the progress line first: the two never share a line.

A reporter reads its figures from a daemon thread a few times a second at most; it never
touches what is measured, and any error of its own is swallowed rather than raised into
the run it reports on.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO, TypeVar

__all__ = ["Progress", "echo", "format_duration", "sayer"]

BAR = 20
"""Cells of the bar on a terminal."""

_lock = threading.RLock()
_drawn: list[Progress] = []
"""Reporters alive on a terminal, the latest last: only the latest draws (a run inside a
phase would otherwise fight its phase for the line)."""
_stamp: Callable[[], str] = str
"""The stamp of plain lines: none until sayer() sets one."""
T = TypeVar("T")


def sayer(width: int = 6, stream: TextIO | None = None) -> Callable[[str], None]:
    """A `say` for phase lines stamped with the seconds since now; plain progress lines get
    the same stamp, so that a log reads as one timeline."""
    global _stamp
    began = time.monotonic()

    def stamp() -> str:
        return f"[{time.monotonic() - began:{width}.1f}s] "

    _stamp = stamp

    def say(text: str) -> None:
        echo(stamp() + text, stream)

    return say


def echo(text: str, stream: TextIO | None = None) -> None:
    """A line of its own, under the progress line: that one is cleared, then drawn again."""
    out = stream or sys.stdout
    with _lock:
        top = _drawn[-1] if _drawn else None
        if top is not None and top.stream is out:
            top.clear()
        out.write(text + "\n")
        if top is not None and top.stream is out:
            top.draw()
        out.flush()


def format_duration(seconds: float) -> str:
    """2:05, 1:02:05: as an operator reads a clock."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """`phase`: `done()` of `total` (a count of `unit`, or seconds when `duration`), with
    `figures()` appended: what else the operator watches (live rates, memory).

    Use as a context manager around the phase; the final line is printed on exit."""

    def __init__(
        self,
        phase: str,
        total: float,
        done: Callable[[], float],
        *,
        unit: str = "",
        duration: bool = False,
        figures: Callable[[], str] | None = None,
        stream: TextIO | None = None,
        every_s: float = 10.0,
        refresh_s: float = 0.25,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase = phase
        self.total = total
        self.unit = unit
        self.duration = duration
        self.stream: TextIO = stream or sys.stdout
        self.every_s = every_s
        self.refresh_s = refresh_s
        self._done = done
        self._figures = figures
        self._width = width
        self._clock = clock
        self._tty = _isatty(self.stream)
        self._began = clock()
        self._printed_at = self._began
        self._shown = 0
        """Characters of the line on the terminal now, to blank them before drawing anew."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the figures -----------------------------------------------------------------

    def eta_s(self, done: float, elapsed: float) -> float | None:
        """Seconds left at the rate so far; None before anything was done."""
        if done >= self.total:
            return 0.0
        if done <= 0 or elapsed <= 0:
            return None
        return (self.total - done) / (done / elapsed)

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """What is printed now: the terminal's line (bar), a log's line, or the final one."""
        elapsed = (self._clock() if now is None else now) - self._began
        done = self._read(self._done, 0.0)
        extra = self._read(self._figures, "") if self._figures else ""
        amount = self._amount(done)
        share = min(1.0, done / self.total) if self.total > 0 else 1.0
        rate = self._rate(done, elapsed)
        if final:
            parts = [f"{self.phase}: {amount} in {format_duration(elapsed)}", *rate]
            return "; ".join([", ".join(parts), *([extra] if extra else [])])
        eta = self.eta_s(done, elapsed)
        left = "ETA ?" if eta is None else f"ETA {format_duration(eta)}"
        if self._tty:
            filled = round(share * BAR)
            bar = "#" * filled + "." * (BAR - filled)
            # What matters most first: a narrow terminal cuts the line's end.
            text = ", ".join([f"{self.phase} [{bar}] {share:4.0%} {amount}", left, *rate])
            return f"{text} | {extra}" if extra else text
        parts = [f"{self.phase}: {amount} ({share:.0%})", *rate, left]
        return "; ".join([", ".join(parts), *([extra] if extra else [])])

    def _amount(self, done: float) -> str:
        if self.duration:
            amount = f"{format_duration(done)}/{format_duration(self.total)}"
        else:
            amount = f"{int(done)}/{int(self.total)}"
        return f"{amount} {self.unit}" if self.unit else amount

    def _rate(self, done: float, elapsed: float) -> list[str]:
        if elapsed <= 0 or done <= 0:
            return []
        rate = done / elapsed
        if self.duration:
            # Wall time against wall time says nothing; simulated time against it is the speed-up.
            return [] if abs(rate - 1) < 0.05 else [f"{rate:.0f}x"]
        return [f"{rate:.1f}/s"]

    @staticmethod
    def _read(read: Callable[[], T] | None, fallback: T) -> T:
        if read is None:
            return fallback
        try:
            return read()
        except Exception:  # noqa: BLE001 - a figure that cannot be read must not stop the run
            return fallback

    # -- the output ------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Print if due: a terminal's line every time, a log's every `every_s` seconds."""
        at = self._clock() if now is None else now
        with _lock:
            if self._tty:
                if _drawn and _drawn[-1] is self:
                    self.draw(at)
            elif at - self._printed_at >= self.every_s:
                self._printed_at = at
                self.stream.write(_stamp() + self.line(at) + "\n")
                self.stream.flush()

    def draw(self, now: float | None = None) -> None:
        text = self.line(now)
        columns = self._width or shutil.get_terminal_size().columns
        # A line wider than the terminal wraps, and `\r` then redraws only its last row.
        text = text[: max(10, columns - 1)]
        self.stream.write("\r" + text.ljust(self._shown))
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def start(self) -> Progress:
        self._began = self._printed_at = self._clock()
        if self._tty:
            with _lock:
                _drawn.append(self)
        self._thread = threading.Thread(target=self._run, name=f"progress {self.phase}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """The final line: on a terminal it replaces the progress line and stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _lock:
            final = self.line(final=True)
            if self._tty:
                self.clear()
                self.stream.write(final + "\n")
                if self in _drawn:
                    _drawn.remove(self)
                if _drawn:
                    _drawn[-1].draw()
            else:
                self.stream.write(_stamp() + final + "\n")
            self.stream.flush()

    def _run(self) -> None:
        interval = self.refresh_s if self._tty else min(self.every_s, 1.0)
        while not self._stop.wait(interval):
            self.tick()

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
