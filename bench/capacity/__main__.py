"""`python -m bench.capacity`: 1, 2 and 4 worker groups in turn against one Redis, each
under more load than it carries; then the table (printed, docs/scaling.md with its plot,
bench/capacity/results.json).

Exits 1 when a step could not run; the table says which and why.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from bench import progress
from bench.capacity import report
from bench.capacity.measure import measure_step
from bench.harness import ROOT, machine
from flashcall_dev.stack import REPO_ROUTING, local_stack

_NOTES = Path(__file__).with_name("notes.md")


def _groups(text: str) -> list[int]:
    try:
        groups = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not groups or min(groups) < 1:
        raise argparse.ArgumentTypeError("every step needs at least one worker group")
    return groups


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("a step needs at least one verification")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--groups", type=_groups, default=[1, 2, 4], help="worker groups per step (1,2,4)")
    parser.add_argument("--count", type=_positive, default=4000, help="verifications per step")
    parser.add_argument("--latency-ms", type=int, default=500, help="how long providers take to answer")
    parser.add_argument("--routing", type=Path, default=REPO_ROUTING, help="the workers' routing file")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where scaling.md and its plot go")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "capacity" / "results.json")
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip the `finally` blocks that stop Redis, the sandbox and workers.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        results = run(args.groups, args.count, args.latency_ms, args.routing)
    finally:
        signal.signal(signal.SIGTERM, previous)
    write(results, args.docs, args.results)
    print()
    print(report.table(results))
    print(f"\nwritten: {args.docs / 'scaling.md'}, {args.docs / report.IMAGE}, {args.results}")
    return 1 if any("error" in step for step in results["steps"]) else 0


def run(groups: list[int], count: int, latency_ms: int, routing: Path) -> dict[str, Any]:
    say = progress.sayer(width=6)
    steps: list[dict[str, Any]] = []
    with local_stack(sandbox_latency_ms=latency_ms, routing_path=routing) as stack:
        for n, size in enumerate(groups):
            try:
                step = measure_step(
                    stack, size, count, latency_ms=latency_ms, first_number=n * count, say=say
                )
            except Exception:  # noqa: BLE001 - one broken step must not hide the others' figures
                say(f"{size} worker groups could not run:\n{traceback.format_exc()}")
                steps.append({"groups": size, "error": traceback.format_exc(limit=3)})
                continue
            say(
                f"{size} worker groups: {step['approved_per_second']} approved/s, Redis "
                f"{step['redis_cpu_ms_per_verification']} ms CPU and {step['commands_per_verification']} "
                f"commands per verification, {step['redis_cpu_share']:.0%} of a core"
            )
            steps.append(step)
        # Not pinned to a CPU: Redis counts its own CPU time (getrusage), whichever CPU ran it.
        ran_on = machine(stack.redis_url, redis_cpu_affinity="none")
    return {
        "machine": ran_on,
        "settings": {
            "groups": groups,
            "count": count,
            "latency_ms": latency_ms,
            "routing": _shown(routing),
            "processes_per_group": {"verification": 1, "check": 1},
        },
        "steps": steps,
        "ceiling": _dearest(steps),
    }


def _dearest(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ceiling of the step whose verifications cost Redis the most: the one to plan by."""
    ran = report.measured(steps)
    if not ran:
        return None
    dearest = max(ran, key=lambda step: step["redis_cpu_ms_per_verification"])
    return {"groups": dearest["groups"], **dearest["ceiling"]}


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def write(results: dict[str, Any], docs: Path, results_path: Path) -> None:
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    docs.mkdir(parents=True, exist_ok=True)
    report.plot(results, docs / report.IMAGE)
    notes = _NOTES.read_text(encoding="utf-8")
    (docs / "scaling.md").write_text(report.markdown(results, notes), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
