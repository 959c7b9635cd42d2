"""bench/results.json as tables: printed, and written to docs/benchmarks.md with a plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.capacity.measure import PLANNED_SHARE
from bench.harness import LATENCIES, markdown_table

THREADS = 512
"""`flashcall worker`'s default threads per process: calls in flight per process at most."""


@dataclass(frozen=True)
class Target:
    """One target of the benchmark: `measured` reads it from the results, None if not run."""

    name: str
    limit: float
    unit: str
    measured: Callable[[dict[str, Any]], float | None]
    source: str
    """Which measurement of the run it comes from."""
    at_most: bool = True
    """Whether the figure must stay at or below `limit` (or reach it)."""

    @property
    def goal(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {_fmt(self.limit, self.unit)}"

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        if self.met(value):
            return "met"
        return f"**missed** by {_fmt(abs(value - self.limit), self.unit)}"


def _run(results: dict[str, Any], latency_ms: int, processes: int | None = None) -> dict[str, Any] | None:
    wanted = processes or results["machine"]["cpus"]
    for run in results["throughput"]:
        if run["latency_ms"] == latency_ms and run["processes"] == wanted:
            found: dict[str, Any] = run
            return found
    return None


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


def _approved(key: str) -> Callable[[dict[str, Any]], float | None]:
    """Figure `key` of the start -> approved run against the instant provider: where the
    rate is highest, so that the idle worker's share of each verification is least."""
    read = _get(key)

    def approved(results: dict[str, Any]) -> float | None:
        runs = [run for run in results.get("approval", []) if run["latency_ms"] == 0]
        return read(runs[0]) if runs else None

    return approved


def _delivered(key: str) -> Callable[[dict[str, Any]], float | None]:
    """Figure `key` of the start -> delivered run against the instant provider."""
    read = _get(key)
    return lambda results: read(_run(results, 0) or {})


def _async_ratio(latency_ms: int) -> Callable[[dict[str, Any]], float | None]:
    return lambda results: _ratio(results, latency_ms, "bare_async_actor")


def _ceiling(results: dict[str, Any]) -> float | None:
    """Verifications per second one primary carries at its planned share of a core."""
    redis_ms = _approved("redis_cpu_ms_per_verification")(results)
    return round(PLANNED_SHARE * 1000 / redis_ms) if redis_ms else None


_APPROVAL_RUNS = "start→approval, instant provider (routing.yaml)"

TARGETS = [
    Target(
        "Redis CPU per verification, start to approval",
        0.4,
        " ms",
        _approved("redis_cpu_ms_per_verification"),
        _APPROVAL_RUNS,
    ),
    Target(
        "Redis commands per verification, start to approval",
        30,
        "",
        _approved("commands_per_verification"),
        _APPROVAL_RUNS,
    ),
    Target(
        "Redis commands per idle worker process",
        20,
        "/s",
        _get("commands", "idle_commands_per_process_per_second"),
        "the idle worker (routing.yaml), beside the Redis samples",
    ),
    Target(
        f"one primary's planned ceiling ({PLANNED_SHARE:.0%} of a core)",
        1700,
        "/s",
        _ceiling,
        "the Redis CPU per verification above",
        at_most=False,
    ),
    Target(
        "worker CPU per verification, start to approval",
        3,
        " ms",
        _approved("worker_cpu_ms_per_verification"),
        _APPROVAL_RUNS,
    ),
    Target(
        "worker CPU per verification, start to delivered",
        2,
        " ms",
        _delivered("worker_cpu_ms_per_verification"),
        "start→delivered, instant provider (VoicePassword)",
    ),
    *(
        Target(
            f"throughput vs bare_async_actor, {latency} ms provider",
            1.0,
            "x",
            _async_ratio(latency),
            "start→delivered, side by side",
            at_most=False,
        )
        for latency in LATENCIES
    ),
    Target(
        "throughput vs the faster baseline, instant provider",
        1.0,
        "x",
        lambda results: _ratio(results, 0),
        "start→delivered, side by side",
        at_most=False,
    ),
    Target(
        "check round trip on a quiet worker, code checked by Telphin, p99",
        10,
        " ms",
        _get("quiet_checks", "provider", "p99_ms"),
        "sequential checks 0.2-0.5 s apart",
    ),
    Target(
        "check round trip on a quiet worker, code checked by the router, p99",
        10,
        " ms",
        _get("quiet_checks", "router", "p99_ms"),
        "sequential checks 0.2-0.5 s apart",
    ),
    Target(
        "breaker-open overhead, p99",
        20,
        " ms",
        _get("breaker", "overhead_p99_ms"),
        "start→delivered at 150/s, breaker closed and open",
    ),
    Target(
        "RSS per worker process",
        100,
        " MB",
        _get("memory", "peak_rss_mb"),
        "peak over every run (flat over time: make soak)",
    ),
    Target(
        "API status reads on one core",
        2000,
        "/s",
        _get("api", "status_reads", "requests_per_second"),
        "GET /v1/verifications/{id}, the API pinned to one core",
        at_most=False,
    ),
    Target(
        "API check p99 over the Redis check p99, quiet worker",
        10,
        " ms",
        _get("api", "checks", "quiet", "difference_p99_ms"),
        "pairs of checks started together, 0.2-0.5 s apart, right code",
    ),
    Target(
        "API check p99 over the Redis check p99, under the 500 ms load",
        10,
        " ms",
        _get("api", "checks", "load", "difference_p99_ms"),
        "pairs of checks started together, during a 500 ms start→delivered run",
    ),
]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    return text + unit


def targets_table(results: dict[str, Any], targets: list[Target] = TARGETS) -> str:
    rows = []
    for target in targets:
        value = target.measured(results)
        measured = _fmt(value, target.unit)
        rows.append([target.name, target.goal, measured, target.verdict(value), target.source])
    return markdown_table(["figure", "target", "measured", "", "measured in"], rows)


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


_SHARED = ("worker", "redis", "sandbox")


def cpu_table(results: dict[str, Any]) -> str:
    """Against the instant sandbox the rate is a race for the machine's cores: what each
    worker, and Redis and the sandbox on its behalf, spent per verification (or message)."""
    run = _run(results, 0)
    if run is None or "cpu_ms_per_verification" not in run:
        return ""
    entries = [("project", run["project"]["rate"], run["cpu_ms_per_verification"])]
    entries += [
        (baseline["label"], baseline["rate"], baseline["cpu_ms_per_verification"])
        for baseline in run["baselines"]
        if "cpu_ms_per_verification" in baseline
    ]
    rows = [
        [f"**{label}**" if label == "project" else label, _fmt(rate)]
        + [_fmt(used[name]) for name in _SHARED]
        + [_fmt(round(sum(used[name] for name in _SHARED), 3))]
        for label, rate, used in entries
    ]
    header = ["0 ms provider", "/s", "worker", "Redis", "sandbox", "together"]
    return (
        "CPU milliseconds per verification (a baseline's per message) against the instant "
        f"sandbox, on {results['machine']['cpus']} cores: the rate above follows the total.\n\n"
        + markdown_table(header, rows)
    )


def details(results: dict[str, Any]) -> str:
    parts = []
    if results.get("checks") or results.get("quiet_checks"):
        parts.append(checks_section(results))
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
        parts.append(redis_section(commands))
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
    if results.get("api"):
        parts.append(api_section(results["api"]))
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


_KIND = {"provider": "the default policy's calls", "router": "the voice calls"}
_QUIET = {
    "provider": "quiet worker, right code, checked by Telphin (flash call, routing.yaml's default)",
    "router": "quiet worker, right code, checked by the router (VoicePassword voice call)",
}


def checks_section(results: dict[str, Any]) -> str:
    """Check round trips: on a quiet worker as users type codes, on an idle worker kept
    awake by checks 5 ms apart, and under the 500 ms load."""
    quiet = results.get("quiet_checks") or {}
    checks = results.get("checks") or {}
    timed = [(label, quiet[kind]) for kind, label in _QUIET.items() if kind in quiet]
    timed += [
        (label, checks[when])
        for when, label in (
            ("idle", "idle worker, wrong code, checks 5 ms apart"),
            ("load", "under the 500 ms load, wrong code"),
        )
        if when in checks
    ]
    rows = [
        [label, str(values["n"]), _fmt(values["p50_ms"], " ms"), _fmt(values["p99_ms"], " ms")]
        for label, values in timed
    ]
    delivered = "; ".join(
        f"{_KIND[kind]} by "
        + ", ".join(f"{name} {n}" for name, n in sorted(quiet[kind]["delivered_by"].items()))
        for kind in _QUIET
        if kind in quiet
    )
    note = (
        "\n\nQuiet checks: one at a time, 0.2-0.5 s apart, each on a verification of its own, once "
        f"its call was placed: {delivered}. Only the calls of the provider named are checked."
        if quiet
        else ""
    )
    return (
        "### Check round trip (FCALL flashcall_check until BLPOP has the answer)\n\n"
        + markdown_table(["", "checks", "p50", "p99"], rows)
        + note
    )


def api_section(measured: dict[str, Any]) -> str:
    """The HTTP API (bench/api.py): status reads on one core, and checks over the API beside
    the same checks over Redis."""
    reads = measured["status_reads"]
    if reads["pinned"]:
        where = (
            f"the API pinned to core {', '.join(map(str, reads['api_cores']))}, the generator, Redis, "
            f"the sandbox and the worker to {', '.join(map(str, reads['generator_cores']))}"
        )
        busy = (
            f"; the cores were busy {_percent(reads['api_core_busy'])} (the API's) and "
            f"{_percent(reads['generator_cores_busy'])} (the rest's), everyone's processes counted"
        )
    else:
        where, busy = "on one core, nothing pinned", ""
    figures = markdown_table(
        ["status reads", "value"],
        [
            [
                "requests/s",
                f"**{_fmt(reads['requests_per_second'])}** ({reads['count']} in {reads['seconds']} s)",
            ],
            ["API CPU per request", _fmt(reads["api_cpu_ms_per_request"], " ms")],
            ["API process CPU", _percent(reads["api_cpu_share"]) + " of a core"],
            ["generator process CPU", _percent(reads["generator_cpu_share"]) + " of a core"],
            ["latency p50 / p99", f"{_fmt(reads['p50_ms'])} / {_fmt(reads['p99_ms'])} ms"],
        ],
    )
    rows = []
    for when, label in (("quiet", "quiet worker, right code"), ("load", "under the 500 ms load, wrong code")):
        compared = measured["checks"].get(when)
        if not compared:
            continue
        rows.append(
            [
                label,
                str(compared["api"]["n"]),
                _percentiles(compared["api"]),
                _percentiles(compared["redis"]),
                f"{_fmt(compared['difference_p50_ms'])} / {_fmt(compared['difference_p99_ms'])}",
            ]
        )
    checks = markdown_table(
        ["checks", "pairs", "API p50 / p95 / p99 ms", "Redis p50 / p95 / p99 ms", "difference p50 / p99 ms"],
        rows,
    )
    ran = measured.get("machine")
    when = (
        f" Measured on {ran['date']} at commit {ran['commit']} (`python -m bench --only api`), "
        "apart from the rest of this page."
        if ran
        else ""
    )
    return (
        "### The HTTP API: status reads on one core, checks beside Redis\n\n"
        f"GET /v1/verifications/{{id}} on open verifications from {reads['connections']} keep-alive "
        f"connections (aiohttp), {where}{busy}.{when}\n\n"
        + figures
        + "\n\nEach pair: one check over the API (POST /v1/verifications/{id}/check, answered once a "
        "worker compared the code) and one over Redis (FCALL flashcall_check, then BLPOP), each on a "
        "verification of its own, the two started together, each from a process of its own.\n\n" + checks
    )


def _percentiles(spread: dict[str, Any]) -> str:
    # p95 joined later: results from before it have none.
    return " / ".join(_fmt(spread[key]) for key in ("p50_ms", "p95_ms", "p99_ms") if key in spread)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def approval_table(results: dict[str, Any]) -> str:
    """Start to approval at each provider latency."""
    rows = [
        [
            f"{run['latency_ms']} ms",
            str(run["processes"]),
            f"**{_fmt(run['rate'])}** ({_counted(run)})",
            f"{_fmt(run['p50_ms'])} / {_fmt(run['p99_ms'])}",
            f"{_fmt(run['worker_cpu_ms_per_verification'])} ({_fmt(run['check_cpu_ms_per_verification'])})",
            _fmt(run["redis_cpu_ms_per_verification"], " ms"),
            _fmt(run["commands_per_verification"]),
            ", ".join(f"{name} {count}" for name, count in sorted(run["delivered_by"].items())),
        ]
        for run in results.get("approval", [])
    ]
    header = [
        "sandbox latency",
        "processes",
        "approved /s",
        "start→approved p50 / p99 ms",
        "worker CPU ms / approval (of it, check process)",
        "Redis CPU / approval",
        "Redis commands / approval",
        "delivered by",
    ]
    text = markdown_table(header, rows)
    instant = next((run for run in results.get("approval", []) if run["latency_ms"] == 0), None)
    if instant:
        top = ", ".join(f"{n} {c}" for n, c in instant["top_commands_per_verification"])
        text += f"\n\nMost run commands per approval at 0 ms (functions' own included): {top}."
    return text


def redis_section(commands: dict[str, Any]) -> str:
    """Per verification on a quiet worker: commands, round trips, and what each library
    function and broker script costs; and what the idle worker runs."""
    top = ", ".join(f"{name} {calls}" for name, calls in commands["top_commands_per_verification"])
    figures = markdown_table(
        ["figure", "per verification"],
        [
            ["commands Redis ran (functions' own included)", _fmt(commands["commands_per_verification"])],
            ["round trips, all", _fmt(commands["round_trips_per_verification"])],
            ["round trips by the worker", _fmt(commands["worker_round_trips_per_verification"])],
            [
                "round trips by the producer (start, check, BLPOP)",
                _fmt(commands["producer_round_trips_per_verification"]),
            ],
        ],
    )
    functions = markdown_table(
        ["function or script", "calls", "own commands / call", "own commands", "µs / call", "µs"],
        [
            [
                f"`{row['name']}`",
                _fmt(row["calls"]),
                _fmt(row["commands_per_call"]),
                _fmt(row["commands"]),
                _fmt(row["usec_per_call"]),
                _fmt(row["usec"]),
            ]
            for row in commands["functions"]
        ],
    )
    idle = markdown_table(
        ["function or script", "calls / s", "own commands / s", "µs / s"],
        [
            [
                f"`{row['name']}`",
                _fmt(row["calls_per_second"]),
                _fmt(row["commands_per_second"]),
                _fmt(row["usec_per_second"]),
            ]
            for row in commands["idle_functions"]
        ],
    )
    return (
        "### Redis per verification on a quiet worker, start to approved (routing.yaml)\n\n"
        + figures
        + f"\n\nMost run commands, per verification: {top}. {commands['verifications']} verifications, "
        "started at once, then checked one by one; what the idle worker runs in as long is "
        "measured alone and left out.\n\n"
        "Per verification, each library function (FCALL) and broker script (EVALSHA), the "
        "costliest first: calls and the commands they ran themselves under MONITOR, the "
        "microseconds Redis spent in them from SLOWLOG (every command logged, in a second "
        "sample as large):\n\n"
        + functions
        + _commands_share(commands)
        + "\n\n### Redis on an idle worker (routing.yaml)\n\n"
        f"**{_fmt(commands['idle_commands_per_process_per_second'])}** commands/s per worker process "
        f"({_fmt(commands['idle_commands_per_second'])}/s from {commands['processes']} processes), by "
        "function and script:\n\n" + idle
    )


def _commands_share(commands: dict[str, Any]) -> str:
    """What the commands inside the functions cost of the functions' time: how much fewer
    of them could save."""
    if "their_commands_usec_per_verification" not in commands:
        return ""
    whole = commands["functions_usec_per_verification"]
    inner = commands["their_commands_usec_per_verification"]
    share = f" ({inner / whole * 100:.0f}%)" if whole else ""
    top = ", ".join(f"{name} {usec}" for name, usec in commands["their_commands_usec"])
    return (
        f"\n\nOf the {_fmt(whole)} µs per verification Redis spent in functions and scripts, "
        f"the commands they ran took {_fmt(inner)}{share} by INFO commandstats over the same "
        f"sample (the costliest, µs "
        f"per verification: {top}); the rest is the functions' own Lua: parsing, checking "
        "and building what they write."
    )


def shipped_sections(shipped: dict[str, Any]) -> str:
    """What `bench.scenarios.shipped` measured, alone (python -m bench --only shipped)."""
    return "\n\n".join(
        [
            "## Throughput, start to approval\n\n" + approval_table(shipped),
            checks_section(shipped),
            redis_section(shipped["commands"]),
        ]
    )


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
    parts = []
    for role, title in (("verification", "A verification process"), ("check", "The check process")):
        profiled = found.get(role)
        if profiled is None:
            continue
        if "error" in profiled:
            parts.append(f"### {title}\n\nNot profiled: {profiled['error']}")
            continue
        own = markdown_table(
            ["function (holding the GIL itself)", "% of samples"],
            [[f"`{n}`", str(p)] for n, p in profiled["self"]],
        )
        inclusive = markdown_table(
            ["project function (with what it calls)", "% of samples"],
            [[f"`{n}`", str(p)] for n, p in profiled["inclusive"]],
        )
        parts.append(f"### {title}\n\n{profiled['samples']} samples.\n\n{own}\n\n{inclusive}")
    return "\n\n".join(parts)


def plot(results: dict[str, Any], path: Path) -> str | None:
    """The scaling curves as a PNG; answers why not when matplotlib is missing."""
    try:
        # A bench-only dependency, imported only to draw.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (make install installs it)"
    figure = scaling_figure(results)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def scaling_figure(results: dict[str, Any]) -> Any:
    """Throughput against processes and against latency, the project beside bare_async_actor."""
    import matplotlib.pyplot as plt

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
        project = [run["project"]["rate"] for run in runs]
        bare = [_baseline_rate(run, "bare_async_actor") for run in runs]
        top = max([rate for rate in [*project, *bare] if rate is not None], default=1.0) * 1.6
        caps = [
            run["processes"] * THREADS / (run["latency_ms"] / 1000) if run["latency_ms"] else None
            for run in runs
        ]
        _curve(axis, xs, project, "o-", top, label="flashcall-router")
        _curve(axis, xs, bare, "s--", top, label="bare_async_actor")
        # The ceiling runs far above the curves at low latency: drawn only where it is in
        # view, with markers, so that a run or two at one latency still show it.
        _curve(axis, xs, caps, "^:", top, label="threads / latency", color="grey", markersize=4)
        axis.set_xlabel(label)
        axis.set_ylabel("verifications / s")
        axis.set_ylim(bottom=0, top=top)
        axis.set_xticks(xs)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    return figure


def _curve(axis: Any, xs: list[Any], ys: list[float | None], style: str, top: float, **options: Any) -> None:
    """A series, or nothing when none of its points would be in view: a legend entry with
    no line beside it tells the reader nothing."""
    if not any(y is not None and 0 <= y <= top for y in ys):
        return
    axis.plot(xs, [float("nan") if y is None else y for y in ys], style, **options)


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

{targets_intro(results)}

{targets_table(results)}

## Throughput, start to delivered

{throughput_table(results)}

{cpu_table(results)}

{figure}

## Throughput, start to approval

routing.yaml as shipped (Telphin's flash call first), one worker for every latency: each
code typed by a simulated user as soon as its call is delivered. CPU and Redis commands
are per approved verification over the whole run, the idle worker's included.

{approval_table(results)}

{details(results)}

## Profile under the instant provider's load, start to approval

{profile_section(results)}

{method}
"""


def targets_intro(results: dict[str, Any]) -> str:
    if (results.get("api") or {}).get("machine"):
        return (
            "Every target of issues 20 and 22: the API's from its part run alone (see its section), "
            "the others from this one run."
        )
    return "Every target of issues 20 and 22, from this one run."


def console(results: dict[str, Any]) -> str:
    return "\n\n".join(
        [
            "Targets",
            targets_table(results),
            "Throughput, start to delivered",
            throughput_table(results),
            cpu_table(results),
            "Throughput, start to approval",
            approval_table(results),
            details(results),
        ]
    )
