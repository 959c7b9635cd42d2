"""bench/results.json as tables: printed, and written to docs/benchmarks.md with a plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import markdown_table

THREADS = 512
"""`flashcall worker`'s default threads per process: calls in flight per process at most."""


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: Callable[[dict[str, Any]], float | None]
    met: Callable[[float], bool]
    unit: str


def _run(results: dict[str, Any], latency_ms: int, processes: int | None = None) -> dict[str, Any] | None:
    wanted = processes or results["machine"]["cpus"]
    for run in results["throughput"]:
        if run["latency_ms"] == latency_ms and run["processes"] == wanted:
            found: dict[str, Any] = run
            return found
    return None


def _rate(results: dict[str, Any], latency_ms: int) -> float | None:
    run = _run(results, latency_ms)
    return run["project"]["rate"] if run else None


def _ratio(results: dict[str, Any], latency_ms: int, baseline: str | None = None) -> float | None:
    run = _run(results, latency_ms)
    if run is None:
        return None
    rates = [
        entry["rate"] for entry in run["baselines"] if baseline is None or entry["label"].startswith(baseline)
    ]
    return round(run["project"]["rate"] / max(rates), 2) if rates and max(rates) else None


def _get(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def read(results: dict[str, Any]) -> float | None:
        value: Any = results
        for step in path:
            if not isinstance(value, dict) or step not in value:
                return None
            value = value[step]
        return float(value) if isinstance(value, int | float) else None

    return read


TARGETS = [
    Target("instant sandbox", "≥ 0.8x the faster baseline", lambda r: _ratio(r, 0), lambda v: v >= 0.8, "x"),
    Target("500 ms sandbox", "≥ 400/s", lambda r: _rate(r, 500), lambda v: v >= 400, "/s"),
    Target(
        "500 ms sandbox",
        "≥ 0.8x bare_async_actor",
        lambda r: _ratio(r, 500, "bare_async_actor"),
        lambda v: v >= 0.8,
        "x",
    ),
    Target("2 s sandbox", "≥ 300/s", lambda r: _rate(r, 2000), lambda v: v >= 300, "/s"),
    Target(
        "check round trip, idle", "p99 ≤ 50 ms", _get("checks", "idle", "p99_ms"), lambda v: v <= 50, " ms"
    ),
    Target(
        "check round trip, under the 500 ms load",
        "p99 ≤ 50 ms",
        _get("checks", "load", "p99_ms"),
        lambda v: v <= 50,
        " ms",
    ),
    Target(
        "breaker-open overhead", "p99 ≤ 20 ms", _get("breaker", "overhead_p99_ms"), lambda v: v <= 20, " ms"
    ),
    Target(
        "Redis round trips per verification",
        "≤ 12",
        _get("commands", "round_trips_per_verification"),
        lambda v: v <= 12,
        "",
    ),
    Target(
        "peak RSS per worker process", "≤ 120 MB", _get("memory", "peak_rss_mb"), lambda v: v <= 120, " MB"
    ),
]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    return text + unit


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    for target in TARGETS:
        value = target.measured(results)
        verdict = "n/a" if value is None else ("met" if target.met(value) else "**missed**")
        rows.append([target.name, target.goal, _fmt(value, target.unit), verdict])
    return markdown_table(["figure", "target", "measured", ""], rows)


def _baseline(run: dict[str, Any], module: str) -> str:
    for entry in run["baselines"]:
        if entry["label"].startswith(module):
            return f"{_fmt(entry['rate'])} ({_counted(entry)})"
    return "not run"


def _counted(entry: dict[str, Any]) -> str:
    text = f"{entry['count']} in {entry['seconds']} s"
    if entry.get("unfinished"):
        text += f"; {entry['unfinished']} never finished"
    return text


def throughput_table(results: dict[str, Any]) -> str:
    rows = []
    for run in results["throughput"]:
        project = run["project"]
        latency = run["latency_ms"]
        cap = f"{run['processes'] * THREADS / (latency / 1000):,.0f}" if latency else "-"
        rows.append(
            [
                f"{latency} ms",
                str(run["processes"]),
                f"**{_fmt(project['rate'])}** ({_counted(project)})",
                _baseline(run, "bare_actor "),
                _baseline(run, "bare_async_actor"),
                f"{_fmt(run['ratio'])}x {run['ratio_to'].split(' ')[0]}",
                f"{_fmt(project['p50_ms'])} / {_fmt(project['p99_ms'])}",
                _fmt(run["worker_cpu_ms_per_verification"]),
                f"{run['sandbox_cpu_share'] * 100:.0f}%",
                cap,
            ]
        )
    header = [
        "sandbox latency",
        "processes",
        "project /s",
        "bare_actor /s",
        "bare_async_actor /s",
        "ratio",
        "start→delivered p50 / p99 ms",
        "worker CPU ms / verification",
        "sandbox CPU",
        "in-flight cap /s",
    ]
    return markdown_table(header, rows)


def details(results: dict[str, Any]) -> str:
    parts = []
    checks = results.get("checks")
    if checks:
        rows = [
            [when, str(values["n"]), _fmt(values["p50_ms"], " ms"), _fmt(values["p99_ms"], " ms")]
            for when, values in (("idle worker", checks["idle"]), ("under the 500 ms load", checks["load"]))
        ]
        parts.append("### Check round trip (FCALL flashcall_check until BLPOP has the answer)\n\n")
        parts[-1] += markdown_table(["", "checks", "p50", "p99"], rows)
    breaker = results.get("breaker")
    if breaker:
        rows = [
            [
                state,
                f"{breaker[state]['count']} at {breaker['per_second']:.0f}/s",
                ", ".join(f"{name}: {count}" for name, count in sorted(breaker[state]["providers"].items())),
                _fmt(breaker[state]["p50_ms"], " ms"),
                _fmt(breaker[state]["p99_ms"], " ms"),
            ]
            for state in ("closed", "open")
        ]
        rows.append(
            [
                "overhead",
                "",
                "",
                _fmt(breaker["overhead_p50_ms"], " ms"),
                _fmt(breaker["overhead_p99_ms"], " ms"),
            ]
        )
        parts.append(
            "### Breaker open: start → delivered when the cheaper provider is skipped\n\n"
            + markdown_table(["breaker of vp-cheap", "verifications", "delivered by", "p50", "p99"], rows)
        )
    commands = results.get("commands")
    if commands:
        top = ", ".join(f"{name} {calls}" for name, calls in commands["top_commands_per_verification"])
        parts.append(
            "### Redis commands per verification, start to approved\n\n"
            + markdown_table(
                ["figure", "per verification"],
                [
                    [
                        "commands Redis ran (functions' own included)",
                        _fmt(commands["commands_per_verification"]),
                    ],
                    ["round trips, all", _fmt(commands["round_trips_per_verification"])],
                    ["round trips by the worker", _fmt(commands["worker_round_trips_per_verification"])],
                    [
                        "round trips by the producer (start, check, BLPOP)",
                        _fmt(commands["producer_round_trips_per_verification"]),
                    ],
                ],
            )
            + f"\n\nMost run commands, per verification: {top}. The idle worker's own "
            f"{_fmt(commands['idle_commands_per_second'])} commands/s (timers, heartbeats, "
            f"wake-ups) are measured alone and subtracted ({commands['verifications']} verifications)."
        )
    replica = results.get("replica")
    if replica:
        parts.append(replica_section(replica))
    memory = results.get("memory")
    if memory:
        parts.append(
            "### Memory\n\n"
            f"Peak RSS (VmHWM) of a worker process over every run: **{_fmt(memory['peak_rss_mb'], ' MB')}** "
            f"(all processes: {', '.join(_fmt(peak) for peak in memory['all_mb'])} MB)."
        )
    sandbox = results.get("sandbox")
    if sandbox:
        instant = _run(results, 0)
        share = f"{instant['sandbox_cpu_share'] * 100:.0f}% of one core" if instant else "n/a"
        parts.append(
            "### The sandbox is no bottleneck\n\n"
            f"Alone, with 256 requests in flight, the sandbox answered "
            f"**{_fmt(sandbox['requests_per_second'])}** VoicePassword sends per second: "
            f"{_fmt(sandbox['times_project_rate'])}x the project's best rate, with the load "
            f"generator sharing its machine. While the worker ran flat out against the instant "
            f"sandbox, the sandbox used {share} (the sandbox CPU column above)."
        )
    return "\n\n".join(parts)


def replica_section(replica: dict[str, Any]) -> str:
    """What a claim's wait for a replica costs (bench/scenarios.py, replica_overhead)."""
    rows = [
        [
            label,
            f"{replica[name]['count']} at {replica['per_second']:.0f}/s",
            _fmt(replica[name]["p50_ms"], " ms"),
            _fmt(replica[name]["p99_ms"], " ms"),
            _fmt(replica[name]["wait_per_verification"]),
            _fmt(replica[name]["info_per_verification"]),
            _fmt(replica[name]["commands_per_verification"]),
        ]
        for name, label in (("alone", "no replica"), ("replica", "one replica"))
    ]
    rows.append(
        [
            "overhead",
            "",
            _fmt(replica["overhead_p50_ms"], " ms"),
            _fmt(replica["overhead_p99_ms"], " ms"),
            "",
            "",
            "",
        ]
    )
    header = ["Redis", "verifications", "p50", "p99", "WAIT", "INFO", "commands"]
    return (
        "### A replica attached: each claim waits for it (start → delivered)\n\n"
        + markdown_table(header, rows)
        + "\n\nWAIT, INFO and commands are per verification (start to delivered, functions' own "
        "commands and the idle worker's included). With a replica, every claim travels with "
        "`WAIT 1` in the same round trip; INFO replication is read at most once a second per "
        "process while claims are made."
    )


def profile_section(results: dict[str, Any]) -> str:
    found = results.get("profile")
    if not found:
        return "Not profiled in this run (--no-profile)."
    if "error" in found:
        return f"Not profiled: {found['error']}"
    own = markdown_table(
        ["function (holding the GIL itself)", "% of samples"], [[f"`{n}`", str(p)] for n, p in found["self"]]
    )
    inclusive = markdown_table(
        ["project function (with what it calls)", "% of samples"],
        [[f"`{n}`", str(p)] for n, p in found["inclusive"]],
    )
    return f"{found['samples']} samples of one worker process.\n\n{own}\n\n{inclusive}"


def plot(results: dict[str, Any], path: Path) -> str | None:
    """The scaling curves as a PNG; answers why not when matplotlib is missing."""
    try:
        # A bench-only dependency, imported only to draw.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (make install installs it)"
    cpus = results["machine"]["cpus"]
    figure, (by_processes, by_latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    at_500 = sorted(
        (run for run in results["throughput"] if run["latency_ms"] == 500), key=lambda r: r["processes"]
    )
    at_cpus = sorted(
        (run for run in results["throughput"] if run["processes"] == cpus), key=lambda r: r["latency_ms"]
    )
    for axis, runs, key, label in (
        (by_processes, at_500, "processes", "worker processes (sandbox 500 ms)"),
        (by_latency, at_cpus, "latency_ms", f"provider latency, ms ({cpus} processes)"),
    ):
        xs = [run[key] for run in runs]
        axis.plot(xs, [run["project"]["rate"] for run in runs], "o-", label="flashcall-router")
        axis.plot(
            xs, [_baseline_rate(run, "bare_async_actor") for run in runs], "s--", label="bare_async_actor"
        )
        caps = [
            run["processes"] * THREADS / (run["latency_ms"] / 1000) if run["latency_ms"] else None
            for run in runs
        ]
        if any(cap is not None for cap in caps):
            axis.plot(xs, caps, ":", color="grey", label="threads / latency")
        axis.set_xlabel(label)
        axis.set_ylabel("verifications / s")
        axis.set_ylim(bottom=0, top=max(run["project"]["rate"] for run in runs) * 1.6 if runs else 1)
        axis.set_xticks(xs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _baseline_rate(run: dict[str, Any], module: str) -> float | None:
    for entry in run["baselines"]:
        if entry["label"].startswith(module):
            rate: float = entry["rate"]
            return rate
    return None


def markdown(results: dict[str, Any], image: str | None, plot_error: str | None, method: str) -> str:
    machine = results["machine"]
    figure = f"![throughput against processes and latency]({image})" if image else f"No plot: {plot_error}"
    return f"""# Benchmarks

Written by `make bench` on {machine["date"]}: {machine["cpus"]} CPUs, Python {machine["python"]},
Redis {machine["redis"]}, commit {machine["commit"]}, {machine["seconds"]} s per throughput run.
The raw figures are in [bench/results.json](../bench/results.json).

## Targets

{targets_table(results)}

## Throughput, start to delivered

{throughput_table(results)}

{figure}

{details(results)}

## Profile under the 500 ms load

{profile_section(results)}

{method}
"""


def console(results: dict[str, Any]) -> str:
    return "\n\n".join(
        ["Targets", targets_table(results), "Throughput", throughput_table(results), details(results)]
    )
