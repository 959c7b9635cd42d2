"""The committed charts (docs/benchmarks.png, docs/soak/memory.png), drawn from small results:
every legend entry stands beside a line the reader can see, and no series hides another."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba

from bench.report import scaling_figure
from bench.soak.report import memory_figure


def _throughput(latency_ms: int, processes: int, project: float, bare: float) -> dict[str, Any]:
    return {
        "latency_ms": latency_ms,
        "processes": processes,
        "project": {"rate": project},
        "baselines": [{"label": f"bare_async_actor ({processes}x256)", "rate": bare}],
    }


FULL_BENCH: dict[str, Any] = {
    "machine": {"cpus": 2},
    "throughput": [
        _throughput(0, 2, 931.2, 840.2),
        _throughput(100, 2, 845.5, 777.6),
        _throughput(500, 2, 725.1, 746.8),
        _throughput(2000, 2, 407.6, 220.5),
        _throughput(500, 1, 575.1, 410.3),
        _throughput(500, 4, 875.3, 893.4),
    ],
}
QUICK_BENCH = {"machine": {"cpus": 2}, "throughput": FULL_BENCH["throughput"][:4]}
"""`--quick` runs at 2 processes only: one point at 500 ms, its ceiling far above the curves."""


def _soak() -> dict[str, Any]:
    samples = []
    for n in range(30):
        verify = 70.0 + n * 0.1
        samples.append(
            {
                "at_s": n * 60.0,
                # Two groups' check and main processes take the same memory to the megabyte.
                "rss_mb": {
                    "group0 verify": verify,
                    "group0 check": 47.0,
                    "group0 main": 60.8,
                    "group1 verify": verify + (4.0 if 10 <= n < 20 else -1.5),
                    "group1 check": 47.0,
                    "group1 main": 60.8,
                    "callbacks": 52.5,
                },
                "redis_used_mb": 2.0 + n * 6.5,
                "redis_keys": 1500 * (n + 1),
                "accepted": 2400 * n,
            }
        )
    return {"samples": samples, "marks": {"failover": 600.0, "restart": 1200.0, "load_ended": 1800.0}}


@pytest.fixture
def drawn() -> Iterator[list[Any]]:
    figures: list[Any] = []
    yield figures
    for figure in figures:
        plt.close(figure)


def _series(axis: Any) -> list[Any]:
    """The data lines of an axis: not the failover and restart marks (axvline, unlabelled)."""
    return [line for line in axis.get_lines() if not line.get_label().startswith("_")]


def _points(line: Any) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in line.get_xydata()]


def _shows(line: Any) -> bool:
    """A marker in view, or a segment with an end in view."""
    (x0, x1), (y0, y1) = sorted(line.axes.get_xlim()), sorted(line.axes.get_ylim())
    points = _points(line)
    finite = [math.isfinite(x) and math.isfinite(y) for x, y in points]
    inside = [ok and x0 <= x <= x1 and y0 <= y <= y1 for ok, (x, y) in zip(finite, points, strict=True)]
    marked = line.get_marker() not in (None, "", " ", "None")
    if marked and any(inside):
        return True
    drawn = line.get_linestyle() not in ("None", "", " ")
    return drawn and any(
        (inside[n] or inside[n + 1]) and finite[n] and finite[n + 1] for n in range(len(points) - 1)
    )


def _legend_entries_without_a_visible_line(figure: Any) -> list[str]:
    missing = []
    for axis in figure.axes:
        legend = axis.get_legend()
        if legend is None:
            continue
        # A legend may gather the lines of its twin axes (the soak's bytes per key).
        twins = [a for a in figure.axes if a.get_position().bounds == axis.get_position().bounds]
        lines = {line.get_label(): line for twin in twins for line in _series(twin)}
        for text in legend.get_texts():
            line = lines.get(text.get_text())
            if line is None or not line.get_visible() or not _shows(line):
                missing.append(text.get_text())
    return missing


def _hidden_pairs(figure: Any) -> list[tuple[str, str]]:
    """Series drawn over one another on most of their points whose styles would let the upper
    cover the lower: the same colour, or the lower no wider than the upper."""
    hidden = []
    for axis in figure.axes:
        ordered = sorted(enumerate(_series(axis)), key=lambda pair: (pair[1].get_zorder(), pair[0]))
        for (_, lower), (_, upper) in itertools.combinations(ordered, 2):
            low, high = dict(_points(lower)), dict(_points(upper))
            shared = [x for x in low if x in high and math.isfinite(low[x]) and math.isfinite(high[x])]
            same = [x for x in shared if abs(low[x] - high[x]) < 0.5]
            if not shared or len(same) < len(shared) / 2:
                continue
            alike = to_rgba(lower.get_color()) == to_rgba(upper.get_color())
            if alike or lower.get_linewidth() <= upper.get_linewidth():
                hidden.append((str(lower.get_label()), str(upper.get_label())))
    return hidden


@pytest.mark.parametrize("results", [FULL_BENCH, QUICK_BENCH], ids=["full run", "quick run"])
def test_every_benchmark_legend_entry_has_a_line_in_view(results: dict[str, Any], drawn: list[Any]) -> None:
    figure = scaling_figure(results)
    drawn.append(figure)
    assert _legend_entries_without_a_visible_line(figure) == []


def test_a_ceiling_out_of_view_has_no_legend_entry(drawn: list[Any]) -> None:
    figure = scaling_figure(QUICK_BENCH)
    drawn.append(figure)
    by_processes = figure.axes[0]
    labels = [text.get_text() for text in by_processes.get_legend().get_texts()]
    assert labels == ["flashcall-router", "bare_async_actor"]


def test_a_ceiling_in_view_keeps_its_legend_entry(drawn: list[Any]) -> None:
    figure = scaling_figure(FULL_BENCH)
    drawn.append(figure)
    for axis in figure.axes:
        assert "threads / latency" in [text.get_text() for text in axis.get_legend().get_texts()]


def test_no_benchmark_series_hides_another(drawn: list[Any]) -> None:
    figure = scaling_figure(FULL_BENCH)
    drawn.append(figure)
    assert _hidden_pairs(figure) == []


def test_every_soak_legend_entry_has_a_line_in_view(drawn: list[Any]) -> None:
    figure = memory_figure(_soak())
    drawn.append(figure)
    assert _legend_entries_without_a_visible_line(figure) == []


def test_processes_of_two_groups_with_the_same_memory_both_show(drawn: list[Any]) -> None:
    figure = memory_figure(_soak())
    drawn.append(figure)
    assert _hidden_pairs(figure) == []


def test_the_soak_figure_draws_every_process_sampled(drawn: list[Any]) -> None:
    figure = memory_figure(_soak())
    drawn.append(figure)
    plotted = {line.get_label() for line in figure.axes[0].get_lines()}
    assert set(_soak()["samples"][0]["rss_mb"]) <= plotted
