"""The targets, the table, the plots and docs/routing-quality.md from a simulation's results."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import markdown_table
from bench.simulate.metrics import rolling
from bench.simulate.scenarios import SCENARIOS

__all__ = [
    "APPROVAL_POINTS",
    "COST_MARGIN",
    "DEMOTION_BOUND",
    "Verdict",
    "markdown",
    "plot",
    "table",
    "verdicts",
]

COST_MARGIN = 0.10
"""Learned cost per approved verification at most this much above the oracle's."""
APPROVAL_POINTS = 0.02
"""Learned approval rate at most this far below the oracle's."""
DEMOTION_BOUND = 200
"""A silent degradation is demoted within this many verifications."""
ROUTERS = ("learned", "static", "oracle")
_NOTES = Path(__file__).with_name("notes.md")


@dataclass(frozen=True, slots=True)
class Verdict:
    scenario: str
    target: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "passed": self.passed,
            "detail": self.detail,
        }


def _by_router(results: Sequence[Mapping[str, Any]], scenario: str) -> dict[str, Mapping[str, Any]]:
    return {r["router"]: r for r in results if r["scenario"] == scenario and "error" not in r}


def verdicts(results: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    out: list[Verdict] = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        runs = _by_router(results, scenario)
        learned, static, oracle = (runs.get(name) for name in ROUTERS)
        if learned is None or oracle is None:
            out.append(Verdict(scenario, "all targets", False, "the learned or the oracle run is missing"))
            continue
        l_cpa, o_cpa = learned["cost_per_approved"], oracle["cost_per_approved"]
        if l_cpa is None or o_cpa is None:
            out.append(Verdict(scenario, "cost per approved", False, "no approved verification"))
        else:
            over = l_cpa / o_cpa - 1
            out.append(
                Verdict(
                    scenario,
                    f"cost per approved within {COST_MARGIN:.0%} of the oracle",
                    over <= COST_MARGIN,
                    f"{l_cpa:.4f} vs {o_cpa:.4f}: {over:+.1%}",
                )
            )
        gap = oracle["approval_rate"] - learned["approval_rate"]
        out.append(
            Verdict(
                scenario,
                f"approval rate within {APPROVAL_POINTS * 100:.0f} points of the oracle",
                gap <= APPROVAL_POINTS,
                f"{learned['approval_rate']:.2%} vs {oracle['approval_rate']:.2%}: {-gap * 100:+.2f} points",
            )
        )
        if static is not None and static["cost_per_approved"] and l_cpa is not None:
            saving = 1 - l_cpa / static["cost_per_approved"]
            out.append(
                Verdict(
                    scenario,
                    "cheaper per approval than static cheapest-first",
                    saving > 0,
                    f"{l_cpa:.4f} vs {static['cost_per_approved']:.4f}: {-saving:+.1%}",
                )
            )
        if scenario == "degradation":
            for change in learned["reactions"]:
                if change["expect"] != "leave":
                    continue
                took = change["reaction"]["verifications"]
                demoted = change.get("first_demoted_after")
                out.append(
                    Verdict(
                        scenario,
                        f"silent degradation demoted within {DEMOTION_BOUND} verifications",
                        took is not None and took <= DEMOTION_BOUND and not change["reaction"]["note"],
                        f"traffic moved after {took if took is not None else 'never'}"
                        + (
                            f", first demoted event after {demoted}"
                            if demoted is not None
                            else ", no demoted event"
                        )
                        + (f" ({change['reaction']['note']})" if change["reaction"]["note"] else ""),
                    )
                )
    return out


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _reaction_text(change: Mapping[str, Any]) -> str:
    measured = change["reaction"]
    text = measured["note"] or (
        "never" if measured["verifications"] is None else str(measured["verifications"])
    )
    ranges = change.get("by_operator") or {}
    if ranges:
        text += f" (where it led: {', '.join(ranges)})"
    demoted = change.get("first_demoted_after")
    if demoted is not None:
        text += f"; first demoted event after {demoted}"
    return f"{change['label']}: {text}"


def _flash_shares(run: Mapping[str, Any]) -> str:
    """Who made the verifications' first flash call, over the whole run ("-": the step skipped)."""
    totals: dict[str, int] = {}
    for by_provider in run["first_flash"].values():
        for provider, n in by_provider.items():
            totals[provider] = totals.get(provider, 0) + n
    count = sum(totals.values()) or 1
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return ", ".join(
        f"{'skipped' if p == '-' else p} {n / count:.0%}" for p, n in ranked if n / count >= 0.01
    )


def table(results: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "scenario",
        "router",
        "verifications",
        "approved",
        "approval rate",
        "cost per approved, RUB",
        "vs oracle",
        "first flash call by",
        "verifications to react",
    ]
    rows: list[list[str]] = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        runs = _by_router(results, scenario)
        oracle = runs.get("oracle")
        for router in ROUTERS:
            errored = [
                r for r in results if r["scenario"] == scenario and r["router"] == router and "error" in r
            ]
            if errored:
                rows.append([scenario, router, f"could not run: {errored[0]['error'].splitlines()[-1]}"])
                continue
            r = runs.get(router)
            if r is None:
                continue
            versus = "-"
            if oracle is not None and oracle["cost_per_approved"] and r["cost_per_approved"]:
                versus = f"{r['cost_per_approved'] / oracle['cost_per_approved'] - 1:+.1%}"
            reactions = "; ".join(_reaction_text(c) for c in r["reactions"]) or "-"
            rows.append(
                [
                    scenario,
                    router,
                    str(r["count"]),
                    str(r["approved"]),
                    f"{r['approval_rate']:.2%}",
                    _money(r["cost_per_approved"]),
                    versus,
                    _flash_shares(r),
                    reactions,
                ]
            )
    return markdown_table(header, rows)


def verdict_table(found: Sequence[Verdict]) -> str:
    return markdown_table(
        ["scenario", "target", "result", "learned vs reference"],
        [[v.scenario, v.target, "PASS" if v.passed else "**FAIL**", v.detail] for v in found],
    )


def estimates_table(results: Sequence[Mapping[str, Any]], scenario: str = "steady") -> str:
    """The learned router's estimates at the end of a run, beside the truth."""
    run = _by_router(results, scenario).get("learned")
    if run is None or not run.get("estimates"):
        return ""
    return markdown_table(
        ["provider", "channel", "operator", "decayed trials", "learned P(approved)", "true"],
        [
            [
                e["provider"],
                e["channel"],
                e["operator"],
                str(e["trials"]),
                f"{e['estimate']:.3f}",
                f"{e['truth']:.3f}",
            ]
            for e in run["estimates"]
        ],
    )


def plot(results: Sequence[Mapping[str, Any]], scenario: str, path: Path, *, window: int) -> None:
    """Rolling cost per approved verification and approval rate of the three routers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by_router(results, scenario)
    figure, (top, bottom, share) = plt.subplots(
        3, 1, figsize=(10, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    watched, ranges = SCENARIOS[scenario].watch
    colours = {"learned": "tab:blue", "static": "tab:orange", "oracle": "tab:green"}
    for router in ROUTERS:
        r = runs.get(router)
        if r is None or not r.get("costs_e4"):
            continue
        xs, cpa, rate = rolling(r["costs_e4"], r["approvals"], window)
        top.plot(xs, [float("nan") if c is None else c for c in cpa], label=router, color=colours[router])
        bottom.plot(xs, [100 * x for x in rate], label=router, color=colours[router])
        sx, sy = _shares(r.get("flash_first", []), watched, ranges, max(20, window // 5))
        share.plot(sx, sy, label=router, color=colours[router])
    any_run = next(iter(runs.values()), None)
    if any_run is not None:
        for change in SCENARIOS[scenario].changes:
            at = int(change.at * any_run["count"])
            for axis in (top, bottom, share):
                axis.axvline(at, color="grey", linestyle="--", linewidth=0.8)
            top.annotate(
                change.label,
                (at, 1),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                rotation=90,
                va="top",
                ha="right",
            )
    top.set_ylabel(f"RUB per approved\n(last {window})")
    bottom.set_ylabel(f"approval rate, %\n(last {window})")
    who = "the flash step skipped" if watched == "-" else f"first flash call by {watched}"
    share.set_ylabel(f"{who}, %\n({', '.join(ranges)})", fontsize=8)
    share.set_ylim(-5, 105)
    share.grid(alpha=0.3)
    share.set_xlabel("verifications arrived")
    top.set_title(f"{SCENARIOS[scenario].title}: {SCENARIOS[scenario].what}", fontsize=9, wrap=True)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def markdown(
    results: Sequence[Mapping[str, Any]],
    found: Sequence[Verdict],
    plots: Mapping[str, str],
    settings: str,
    pumping: str = "",
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = []
    for scenario, image in plots.items():
        s = SCENARIOS[scenario]
        sections.append(f"### {s.title} (`{scenario}`)\n\n{s.what}\n\n![{s.title}]({image})\n")
    return (
        "# Routing quality: what learning buys, against an oracle\n\n"
        "<!-- generated by `make simulate` (python -m bench.simulate); "
        "edit bench/simulate/notes.md instead -->\n\n"
        f"## The latest run ({when}; {settings})\n\n"
        f"{table(results)}\n\n"
        "### Targets\n\n"
        f"{verdict_table(found)}\n\n"
        "## Over time\n\n"
        + "\n".join(sections)
        + "\n"
        + _estimates_section(results)
        + (pumping + "\n" if pumping else "")
        + _NOTES.read_text(encoding="utf-8")
    )


def _shares(
    flash_first: Sequence[Sequence[str]], watched: str, ranges: Sequence[str], window: int
) -> tuple[list[int], list[float]]:
    """Rolling share (%) of the watched ranges' verifications whose first flash call went to
    `watched`, by arrival index."""
    xs: list[int] = []
    ys: list[float] = []
    recent: list[bool] = []
    for index, (operator, provider) in enumerate(flash_first):
        if operator not in ranges:
            continue
        recent.append(provider == watched)
        if len(recent) > window:
            recent.pop(0)
        if len(recent) == window:
            xs.append(index + 1)
            ys.append(100 * sum(recent) / window)
    return xs, ys


def _estimates_section(results: Sequence[Mapping[str, Any]]) -> str:
    estimates = estimates_table(results)
    if not estimates:
        return ""
    return (
        "## What the learned router believed at the end of `steady`\n\n"
        "Its estimates (decayed counts, as routing ranks by them) beside the world's chance that "
        "a delivered attempt ends approved while it is the current one.\n\n"
        f"{estimates}\n\n"
    )
