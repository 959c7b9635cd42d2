"""What a soak's figures mean: the checks it must pass, the page and the plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import markdown_table

__all__ = ["Check", "checks", "growth", "markdown", "memory_figure", "plot", "redis_bytes_per_verification"]

_NOTES = Path(__file__).with_name("notes.md")

RSS_GROWTH_LIMIT = 0.10
RSS_SLACK_MB = 5.0
"""A process is flat when its late median is within 10% (and 5 MB, for a short run's
noise) of its early one."""
REDIS_PER_KEY_GROWTH_LIMIT = 0.25
"""Redis keeps every verification a day after it ends, so its memory grows with the keys;
what must stay flat is the memory per key (queues, timers and acks not piling up)."""
MIN_KEYS_PLOTTED = 500
LONG_LIVED = ("group0 verify", "group0 check", "group0 main", "callbacks")
"""The processes that run from start to end (group 1 is restarted on the way)."""


@dataclass(frozen=True)
class Check:
    what: str
    passed: bool
    detail: str


def _window(
    samples: Sequence[dict[str, Any]], end_s: float, start: float, stop: float
) -> list[dict[str, Any]]:
    return [s for s in samples if start * end_s <= s["at_s"] <= stop * end_s]


def growth(samples: Sequence[dict[str, Any]], end_s: float, value: str) -> tuple[float, float] | None:
    """The median of `value` (a key of a sample's rss_mb, or `redis_per_key`) over the
    second quarter of the load and over its last quarter; the first quarter is warm-up."""

    def read(sample: dict[str, Any]) -> float | None:
        if value == "redis_per_key":
            return sample["redis_used_mb"] * 2**20 / sample["redis_keys"] if sample["redis_keys"] else None
        found = sample["rss_mb"].get(value)
        return float(found) if found is not None else None

    early = [v for s in _window(samples, end_s, 0.25, 0.5) if (v := read(s)) is not None]
    late = [v for s in _window(samples, end_s, 0.75, 1.0) if (v := read(s)) is not None]
    if not early or not late:
        return None
    return statistics.median(early), statistics.median(late)


def checks(result: dict[str, Any]) -> list[Check]:
    tally = result["tally"]
    end_s = result["marks"]["load_ended"]
    found = [
        Check(
            "nothing lost",
            tally["lost"] == 0,
            f"{tally['lost']} of {tally['accepted']} accepted not sent or ended",
        ),
        Check(
            "nobody called twice",
            tally["called_twice"] == 0,
            f"{tally['called_twice']} numbers got more calls than their verification claimed",
        ),
        Check(
            "every start taken",
            tally["refused"] == 0,
            f"{tally['refused']} starts still refused after the producer sent them again",
        ),
    ]
    for name in LONG_LIVED:
        medians = growth(result["samples"], end_s, name)
        if medians is None:
            found.append(Check(f"{name} memory flat", False, "not sampled in both windows"))
            continue
        early, late = medians
        flat = late <= early * (1 + RSS_GROWTH_LIMIT) + RSS_SLACK_MB
        found.append(Check(f"{name} memory flat", flat, f"RSS {early:.1f} MB -> {late:.1f} MB"))
    medians = growth(result["samples"], end_s, "redis_per_key")
    if medians is None:
        found.append(Check("Redis memory per key flat", False, "not sampled in both windows"))
    else:
        early, late = medians
        found.append(
            Check(
                "Redis memory per key flat",
                late <= early * (1 + REDIS_PER_KEY_GROWTH_LIMIT),
                f"{early:.0f} B -> {late:.0f} B per key",
            )
        )
    return found


def redis_bytes_per_verification(samples: Sequence[dict[str, Any]]) -> float | None:
    """What Redis grew by per verification started, over the second half of the samples
    (after the failover's replication buffers have come and gone)."""
    if len(samples) < 4:
        return None
    middle, last = samples[len(samples) // 2], samples[-1]
    started = int(last["accepted"]) - int(middle["accepted"])
    if started <= 0:
        return None
    return (float(last["redis_used_mb"]) - float(middle["redis_used_mb"])) * 2**20 / started


def markdown(result: dict[str, Any], plot_name: str) -> str:
    when = result["finished_at"]
    config = result["config"]
    tally = result["tally"]
    marks = result["marks"]
    figures = result["figures"]
    verdicts = markdown_table(
        ["check", "result", "figures"],
        [[c.what, "pass" if c.passed else "**FAIL**", c.detail] for c in checks(result)],
    )
    per_verification = redis_bytes_per_verification(result["samples"])
    growth_line = (
        f"Redis grew by {per_verification:.0f} bytes per verification started (second half of the run); "
        f"a kept verification record takes {figures.get('verification_record_bytes')} bytes, and each of "
        f"the {figures.get('event_entries')} entries of the event stream about "
        f"{figures.get('event_entry_bytes')} bytes.\n\n"
        if per_verification is not None
        else ""
    )
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(tally["statuses"].items()))
    return (
        "# Soak: two worker hosts, Sentinel, a failover and a restart\n\n"
        "<!-- generated by `make soak` (python -m bench.soak); edit bench/soak/notes.md instead -->\n\n"
        f"## The latest run ({when})\n\n"
        f"{config['rate']:g} verifications/s for {config['seconds'] / 60:g} min through {config['groups']} "
        f"worker groups, providers answering in {config['latency_ms']} ms; planned failover at "
        f"{marks['failover']:.0f} s (new primary after {figures['failover_s']} s), rolling restart of "
        f"group 1 at {marks['restart']:.0f} s (back after {figures['restart_s']} s).\n\n"
        f"Accepted {tally['accepted']}; statuses at the end: {statuses}. Codes typed by users: "
        f"{figures['checks_sent']}. Errors producers saw (each start sent again): "
        f"{figures['producer_errors'] or 'none'}.\n\n"
        f"{growth_line}"
        f"{verdicts}\n\n"
        f"![Memory over the soak](soak/{plot_name})\n\n"
        f"{_NOTES.read_text(encoding='utf-8')}"
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = memory_figure(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


_GROUP_STYLES = (
    {"linestyle": "-", "linewidth": 3.2, "alpha": 0.6, "zorder": 2},
    {"linestyle": "--", "linewidth": 1.4, "zorder": 3},
    {"linestyle": ":", "linewidth": 1.4, "zorder": 4},
    {"linestyle": "-.", "linewidth": 1.0, "zorder": 5},
)
"""By group: the processes of two groups do the same work and often take the same memory
to the megabyte, so the first group is drawn wide and pale beneath, the others narrow and
dashed over it; either shows through the other."""


def _process_style(name: str) -> dict[str, Any]:
    group, _, _ = name.partition(" ")
    if group.startswith("group") and group[5:].isdigit():
        return dict(_GROUP_STYLES[min(int(group[5:]), len(_GROUP_STYLES) - 1)])
    return {"linestyle": "-", "linewidth": 1.4, "zorder": 3}


def memory_figure(result: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["at_s"] / 60 for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    names = sorted({name for s in samples for name in s["rss_mb"]})
    for name in names:
        points = [(s["at_s"] / 60, s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        top.plot([p[0] for p in points], [p[1] for p in points], label=name, **_process_style(name))
    top.set_ylabel("RSS (MB)")
    top.set_title("Resident memory of each process")
    top.legend(fontsize=8, ncol=3, loc="lower right")
    top.set_ylim(bottom=0)
    bottom.plot(
        minutes, [s["redis_used_mb"] for s in samples], color="tab:red", label="Redis used_memory (MB)"
    )
    bottom.set_ylabel("Redis used_memory (MB)")
    bottom.set_xlabel("minutes since the load began")
    per_key = bottom.twinx()
    # Over the first few keys the figure is Redis's own overhead, which would hide the rest.
    counted = [s for s in samples if s["redis_keys"] >= MIN_KEYS_PLOTTED]
    per_key.plot(
        [s["at_s"] / 60 for s in counted],
        [s["redis_used_mb"] * 2**20 / s["redis_keys"] for s in counted],
        color="tab:gray",
        linestyle="--",
        label="bytes per key",
    )
    per_key.set_ylabel("bytes per key")
    per_key.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    bottom.set_title("Redis primary: memory (kept a day per verification), and per key")
    for axis in (top, bottom):
        for label, at in (("failover", result["marks"]["failover"]), ("restart", result["marks"]["restart"])):
            axis.axvline(at / 60, color="black", linestyle=":", linewidth=1)
            axis.text(at / 60, axis.get_ylim()[1] * 0.95, f" {label}", fontsize=8, va="top")
    lines, labels = bottom.get_legend_handles_labels()
    more_lines, more_labels = per_key.get_legend_handles_labels()
    bottom.legend(lines + more_lines, labels + more_labels, fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure
