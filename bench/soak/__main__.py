"""`python -m bench.soak`: the soak (30 min by default), then its page (docs/soak.md), its
plot (docs/soak/memory.png) and figures (bench/soak/results.json).

Exits 3 when a check failed (something lost, someone called twice, memory growing), 1
when the soak could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
from pathlib import Path

from bench import progress
from bench.harness import ROOT
from bench.soak.report import checks, markdown, plot
from bench.soak.run import SoakConfig, soak

PLOT = "memory.png"


def main(argv: list[str] | None = None) -> int:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=defaults.seconds / 60, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="verifications started per second")
    parser.add_argument(
        "--groups", type=int, default=defaults.groups, help="worker groups (hosts), 2 or more"
    )
    parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms, help="providers' answer time")
    parser.add_argument("--sample-every", type=float, default=defaults.sample_every_s, help="seconds")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where soak.md and soak/ go")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "soak" / "results.json")
    args = parser.parse_args(argv)
    if args.groups < 2:
        parser.error("--groups must be 2 or more: one of them is restarted while the others carry the load")
    # A plain SIGTERM would skip the `finally` blocks that stop Redis, the sandbox and workers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = SoakConfig(
        seconds=args.minutes * 60,
        rate=args.rate,
        groups=args.groups,
        latency_ms=args.latency_ms,
        sample_every_s=args.sample_every,
    )
    say = progress.sayer(width=7)
    result = soak(config, say).to_json()
    result["finished_at"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(result, args.docs / "soak" / PLOT)
    (args.docs / "soak.md").write_text(markdown(result, PLOT), encoding="utf-8")
    failed = [check for check in checks(result) if not check.passed]
    for check in checks(result):
        say(f"{'pass' if check.passed else 'FAIL'}: {check.what}: {check.detail}")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
