"""`python -m bench.simulate`: every scenario under the three routers, then the table, the
targets, the plots (docs/routing-quality.md, docs/routing-quality/*.png) and
bench/simulate/results.json.

Exits 1 when a run could not be made, 4 when a target is missed; the table says by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import progress
from bench.harness import ROOT
from bench.simulate import pumping
from bench.simulate.engine import RouterKind, SandboxEndpoints, Simulation, span_ms
from bench.simulate.report import markdown, plot, table, verdict_table, verdicts
from bench.simulate.scenarios import LEARNING, SCENARIOS
from flashcall_dev.stack import local_stack
from worker.logs.structured import configure
from worker.routing.config import LearningConfig

QUICK_COUNT = 400
PUMPING = "pumping"


_clocks: Any = None
"""In a pool's process: the simulated milliseconds done of every run, shared with the parent."""


def _share_clocks(clocks: Any) -> None:
    global _clocks
    _clocks = clocks


def run_one(
    scenario: str,
    router: str,
    *,
    count: int,
    rate: float,
    seed: int,
    learning: dict[str, Any],
    slot: int | None = None,
) -> dict[str, Any]:
    """One run on a redis-server and a sandbox of its own (so that runs may go in parallel);
    its simulated clock goes into the shared `slot`, for the parent's progress line."""
    configure(fmt="console", level="ERROR")
    clocks = _clocks

    def advanced(ms: int) -> None:
        if clocks is not None and slot is not None:
            clocks[slot] = ms

    with local_stack() as stack:
        simulation = Simulation(
            SCENARIOS[scenario],
            RouterKind(router),
            redis_url=stack.redis_url,
            sandbox=SandboxEndpoints(stack.sandbox_url, stack.provider_urls),
            count=count,
            rate_per_s=rate,
            seed=seed,
            learning=learning,
            progress=advanced,
        )
        return asyncio.run(simulation.run()).to_json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)} and pumping (in real time)"
    )
    parser.add_argument("--count", type=int, default=10_000, help="verifications per run (default 10000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT} verifications per run")
    parser.add_argument("--rate", type=float, default=1.0, help="verifications per simulated second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--routers", default="learned,static,oracle")
    parser.add_argument(
        "--learning",
        default="",
        help="override learning options, e.g. explore=0.1,min_samples=20 (default: routing.yaml's defaults)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(2, os.cpu_count() or 1),
        help="runs in parallel, each with its own Redis and sandbox (default: one a CPU, at least 2)",
    )
    parser.add_argument(
        "--window", type=int, default=0, help="rolling window of the plots (default count/20)"
    )
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where routing-quality.md goes")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "simulate" / "results.json")
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip the `finally` blocks that stop Redis and the sandbox.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    unknown = sorted(set(args.scenarios) - {*SCENARIOS, PUMPING})
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join([*SCENARIOS, PUMPING])}")
    routers = [RouterKind(name.strip()) for name in args.routers.split(",") if name.strip()]
    learning = _overrides(args.learning)
    count = QUICK_COUNT if args.quick else args.count
    chosen = [name for name in args.scenarios or SCENARIOS if name != PUMPING]
    pumps = not args.scenarios or PUMPING in args.scenarios
    say = progress.sayer(width=6)

    jobs = [(scenario, str(router)) for scenario in chosen for router in routers]
    results: list[dict[str, Any]] = []
    failed = False
    context = multiprocessing.get_context()
    clocks = context.Array("q", max(1, len(jobs)), lock=False)
    span = span_ms(count, args.rate)
    futures: dict[tuple[str, str], Future[dict[str, Any]]] = {}
    with (
        ProcessPoolExecutor(
            max_workers=max(1, args.jobs), mp_context=context, initializer=_share_clocks, initargs=(clocks,)
        ) as pool,
        progress.Progress(
            "simulate",
            span * len(jobs) / 1000,
            lambda: sum(clocks) / 1000,
            unit="simulated",
            duration=True,
            figures=lambda: f"{sum(future.done() for future in futures.values())}/{len(jobs)} runs done",
        ),
    ):
        for slot, job in enumerate(jobs):
            futures[job] = pool.submit(
                run_one, *job, count=count, rate=args.rate, seed=args.seed, learning=learning, slot=slot
            )

            def covered(_: Future[dict[str, Any]], slot: int = slot) -> None:
                # A run ends early once every verification ended: its clock then is all it covers.
                clocks[slot] = span

            futures[job].add_done_callback(covered)
        for (scenario, router), future in futures.items():
            try:
                result = future.result()
            except Exception:  # noqa: BLE001 - one broken run must not hide the others' figures
                failed = True
                say(f"{scenario}/{router} could not run:\n{traceback.format_exc()}")
                results.append(
                    {"scenario": scenario, "router": router, "error": traceback.format_exc(limit=3)}
                )
                continue
            cpa = result["cost_per_approved"]
            say(
                f"{scenario}/{router}: approved {result['approval_rate']:.2%}, "
                f"{'-' if cpa is None else f'{cpa:.4f}'} RUB per approved, {result['wall_s']} s"
            )
            results.append(result)

    pumped: dict[str, Any] | None = None
    if pumps:
        try:
            pumped = pumping.run(pumping.Plan.quick() if args.quick else pumping.Plan(), say)
        except Exception:  # noqa: BLE001 - the other scenarios' figures still count
            failed = True
            say(f"pumping could not run:\n{traceback.format_exc()}")
        else:
            say(
                f"pumping: {pumped['calls_paid_to_attack']} calls paid to the attack, "
                f"{pumped['legit_refused']} of {pumped['legit_started']} legitimate starts refused"
            )
    found = verdicts(results)
    window = args.window or max(50, count // 20)
    images = args.docs / "routing-quality"
    plots: dict[str, str] = {}
    for scenario in chosen:
        plot(results, scenario, images / f"{scenario}.png", window=window)
        plots[scenario] = f"routing-quality/{scenario}.png"
    effective = LearningConfig.model_validate({**LEARNING, **learning})
    settings = (
        f"{count} verifications per run, {args.rate:g} a simulated second, seed {args.seed}; "
        f"learned router: explore {effective.explore:g}, min_samples {effective.min_samples}, "
        f"memory {effective.memory}, half_life {effective.half_life / 3600:g} h, "
        f"hysteresis {effective.hysteresis:g}"
    )
    args.docs.mkdir(parents=True, exist_ok=True)
    page = markdown(results, found, plots, settings, pumping.section(pumped) if pumped else "")
    (args.docs / "routing-quality.md").write_text(page, encoding="utf-8")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    summary = [
        {k: v for k, v in r.items() if k not in ("costs_e4", "approvals", "flash_first")} for r in results
    ]
    args.results.write_text(
        json.dumps(
            {
                "settings": settings,
                "runs": summary,
                "targets": [v.to_json() for v in found],
                "pumping": pumped,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print()
    print(table(results))
    print()
    print(verdict_table(found))
    if pumped:
        print()
        print(pumping.section(pumped))
    if failed:
        return 1
    return 0 if all(v.passed for v in found) and (pumped is None or pumped["met"]) else 4


def _overrides(text: str) -> dict[str, Any]:
    """'explore=0.1,half_life=6h' -> {"explore": 0.1, "half_life": "6h"}; routing.yaml validates them."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out


if __name__ == "__main__":
    sys.exit(main())
