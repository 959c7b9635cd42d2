"""`python -m bench.chaos`: every fault scenario, then the table (printed, docs/reliability.md,
bench/chaos/results.json).

Exits 1 when a scenario could not run, 3 when one lost a verification (unless the
scenario expects the loss: Redis lost what it held) or called a user twice (always); the
table says which and why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.chaos.scenarios import RECOVERY_BOUND_S, SCENARIOS
from bench.harness import ROOT, markdown_table

_NOTES = Path(__file__).with_name("notes.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where reliability.md goes")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "chaos" / "results.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other scenarios' latest results from --results and replace only those run now",
    )
    args = parser.parse_args(argv)
    # A plain SIGTERM would skip the `finally` blocks that stop Redis, the sandbox and workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    chosen = args.scenarios or list(SCENARIOS)
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", flush=True)

    results: list[dict[str, Any]] = []
    failed = False
    for name in chosen:
        say(name)
        try:
            result = SCENARIOS[name](say)
        except Exception:  # noqa: BLE001 - one broken scenario must not hide the others' figures
            failed = True
            say(f"{name} could not run:\n{traceback.format_exc()}")
            results.append({"key": name, "scenario": name, "error": traceback.format_exc(limit=3)})
            continue
        say(_line(result.to_json()))
        results.append({"key": name, **result.to_json()})
    if args.merge and args.results.exists():
        fresh = {r["key"]: r for r in results}
        earlier = json.loads(args.results.read_text(encoding="utf-8"))
        results = [fresh.pop(r["key"], r) for r in earlier] + list(fresh.values())
    page = markdown(results)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "reliability.md").write_text(page, encoding="utf-8")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(results))
    if failed:
        return 1
    if any(r.get("called_twice") or (r.get("lost") and not r.get("expected_loss")) for r in results):
        return 3
    return 0


def _line(result: dict[str, Any]) -> str:
    return (
        f"in flight {result['in_flight']}, accepted {result['accepted']}, lost {result['lost']}, "
        f"called twice {result['called_twice']}, recovery {result['recovery_s']} s"
    )


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "scenario",
        "fault",
        "in flight at fault",
        "accepted",
        "refused (producer saw an error)",
        "lost",
        "called twice by a redelivery",
        "called again by fallback",
        "recovery",
        "more",
    ]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["scenario"], "could not run", *[""] * 7, r["error"].splitlines()[-1]])
            continue
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']} s"
        if r["recovery_s"] is not None and r["recovery_s"] > RECOVERY_BOUND_S:
            recovery += f" (over {RECOVERY_BOUND_S:.0f} s)"
        more = [f"{k}: {v}" for k, v in r["figures"].items()] + r["notes"]
        if r.get("expected_loss"):
            more.append(f"lost as expected: {r['expected_loss']}")
        rows.append(
            [
                r["scenario"],
                r["fault"],
                str(r["in_flight"]),
                str(r["accepted"]),
                str(r["refused"]),
                f"**{r['lost']}**" if r["lost"] else "0",
                f"**{r['called_twice']}**" if r["called_twice"] else "0",
                str(r["recalled_after_fault"]),
                recovery,
                "; ".join(more).replace("|", "/"),
            ]
        )
    return markdown_table(header, rows)


def markdown(results: list[dict[str, Any]]) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "# Reliability under faults\n\n"
        "<!-- generated by `make chaos` (python -m bench.chaos); edit bench/chaos/notes.md instead -->\n\n"
        f"## The latest run ({when})\n\n"
        f"{table(results)}\n\n"
        f"{_NOTES.read_text(encoding='utf-8')}"
    )


if __name__ == "__main__":
    sys.exit(main())
