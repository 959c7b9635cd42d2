"""`python -m bench`: every scenario, then the table (printed, docs/benchmarks.md, bench/results.json).

Exits non-zero only when the benchmark could not run; missed targets are read from the table.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bench import api, progress, report, scenarios
from bench.harness import CPUS, ROOT, baselines_missing, machine, stack

_NOTES = Path(__file__).with_name("notes.md")
QUIET_CHECKS = 50
"""Checks of each kind of code on the quiet worker."""
QUIET_CHECKS_QUICK = 5
API_CHECKS = 50
"""Pairs of checks (one over the API, one over Redis) on the quiet worker, as many as the quiet checks."""
API_LOADED_CHECKS = 1000
"""Pairs under load: a p99 of ten checks, not of the slowest one or two (the load lasts
as long as they take, about 25 s)."""
API_CHECKS_QUICK = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long each throughput run lasts")
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks that the benchmark works")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help="where benchmarks.md and its plot go"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument(
        "--only",
        choices=["replica", "shipped", "api"],
        help="run this part alone and print it, writing neither the page nor the results "
        "(shipped: Redis per verification, quiet checks and start to approval on routing.yaml; "
        "api: the HTTP API's status reads and checks)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only api: put its figures into the results and the page, the other "
        "figures as the last full run left them",
    )
    args = parser.parse_args(argv)
    missing = baselines_missing()
    if missing:
        print(f"cannot run the benchmark: {missing}", file=sys.stderr)
        return 2
    seconds = 0.5 if args.quick else args.seconds
    # A plain SIGTERM would skip the `finally` blocks that stop Redis, the sandbox and workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    say = progress.sayer(width=6)
    if args.only == "replica":
        with stack(0) as started:
            replica = scenarios.replica_overhead(scenarios.Bench(started, seconds, say))
        print(json.dumps(replica, indent=2))
        print(report.replica_section(replica))
        return 0
    if args.only == "api":
        with stack(0) as started:
            measured = _api(scenarios.Bench(started, seconds, say), quick=args.quick)
            measured["machine"] = machine(started.redis_url, seconds=seconds)
        print(json.dumps(measured, indent=2))
        print(report.api_section(measured))
        if args.merge:
            results = json.loads(args.results.read_text(encoding="utf-8"))
            results["api"] = measured
            write(results, args.docs, args.results)
            print(f"\nmerged into: {args.docs / 'benchmarks.md'}, {args.results}")
        return 0
    if args.only == "shipped":
        with stack(0) as started:
            shipped = scenarios.shipped(
                scenarios.Bench(started, seconds, say), **_shipped_sizes(seconds, quick=args.quick)
            )
        print(json.dumps(shipped, indent=2))
        print(report.shipped_sections(shipped))
        return 0
    try:
        results = run(seconds, quick=args.quick, profile=not (args.quick or args.no_profile), say=say)
    except Exception as error:  # noqa: BLE001 - any failure means the figures do not exist
        print(f"the benchmark could not run: {error!r}", file=sys.stderr)
        return 1
    write(results, args.docs, args.results)
    print()
    print(report.console(results))
    print(f"\nwritten: {args.docs / 'benchmarks.md'}, {args.results}")
    return 0


def run(seconds: float, *, quick: bool, profile: bool, say: scenarios.Say) -> dict[str, Any]:
    """Every scenario in one stack; `quick` leaves out the runs at 1 and 2 x CPUs processes,
    which no target reads, and checks 5 codes of each kind on the quiet worker."""
    checks = max(50, int(seconds * 80))
    with stack(0) as started:
        bench = scenarios.Bench(started, seconds, say)
        throughput = [
            scenarios.throughput(bench, 0, bare_actor=True),
            scenarios.throughput(bench, 100),
            scenarios.throughput(
                bench, 500, side=lambda: scenarios.checks_under_load(bench, checks, latency_ms=500)
            ),
            scenarios.throughput(bench, 2000),
        ]
        if not quick:
            throughput += [scenarios.throughput(bench, 500, 1), scenarios.throughput(bench, 500, 2 * CPUS)]
        checked = next(run.pop("checks") for run in throughput if "checks" in run)
        shipped = scenarios.shipped(bench, **_shipped_sizes(seconds, quick=quick))
        say("breaker overhead")
        breaker = scenarios.breaker_overhead(bench)
        say("a replica attached")
        replica = scenarios.replica_overhead(bench)
        best = max(run["project"]["rate"] for run in throughput)
        say("sandbox capacity")
        capacity = scenarios.sandbox_capacity(bench, best)
        say("the HTTP API")
        measured_api = _api(bench, quick=quick)
        profiled = scenarios.profile(bench) if profile else None
        ran_on = machine(started.redis_url, seconds=seconds)
    return {
        "machine": ran_on,
        "throughput": throughput,
        "checks": checked,
        **shipped,
        "breaker": breaker,
        "replica": replica,
        "memory": {
            "peak_rss_mb": round(max(bench.peaks_mb), 1),
            "all_mb": [round(p, 1) for p in bench.peaks_mb],
        },
        "sandbox": capacity,
        "api": measured_api,
        "profile": profiled,
    }


def _api(bench: scenarios.Bench, *, quick: bool) -> dict[str, Any]:
    return api.api_part(
        bench,
        checks=API_CHECKS_QUICK if quick else API_CHECKS,
        loaded_checks=API_CHECKS_QUICK if quick else API_LOADED_CHECKS,
        read_seconds=bench.seconds,
    )


def _shipped_sizes(seconds: float, *, quick: bool) -> dict[str, int]:
    return {"quiet": QUIET_CHECKS_QUICK if quick else QUIET_CHECKS, "sample": max(50, int(seconds * 40))}


def write(results: dict[str, Any], docs: Path, results_path: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    image = docs / "benchmarks.png"
    plot_error = report.plot(results, image)
    notes = _NOTES.read_text(encoding="utf-8")
    text = report.markdown(results, image.name if plot_error is None else None, plot_error, notes)
    (docs / "benchmarks.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
