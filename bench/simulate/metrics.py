"""What a run is judged by: cost per approved verification, approval rate, and reaction.

Reaction to a change is counted in verifications, from the first one that arrived after
the change, for each affected operator range on its own (learned routing leads per
channel x operator range): for each verification of the range, the provider that made its
first attempt on the affected channel (None when the router skipped that channel). The
provider's share is taken over the range's last REACTION_WINDOW verifications since the
change (fewer right after it). A router has reacted to `leave` when that share falls below
one half and stays below until the next change; to `return` when it rises to one half or
more and stays. The reaction in a range is the number of verifications (all of them, of
every range) that arrived from the change up to the one where it happened.

Only the ranges where there was something to do count: for `leave`, those where the
provider carried at least half of the last REACTION_WINDOW verifications before the change;
for `return`, those where it did before it was left. The router's reaction is the slowest
of those ranges'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REACTION_WINDOW",
    "Reaction",
    "cost_per_approved",
    "leading",
    "reaction",
    "reaction_across",
    "rolling",
]

REACTION_WINDOW = 20
THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class Reaction:
    verifications: int | None
    """Verifications it took; None when the router never did within the change's span."""
    note: str = ""
    """Why there was nothing to react to (the provider did not carry that traffic)."""

    def to_json(self) -> dict[str, object]:
        return {"verifications": self.verifications, "note": self.note}

    def __str__(self) -> str:
        if self.note:
            return self.note
        return "never" if self.verifications is None else str(self.verifications)


def reaction(
    served: Sequence[tuple[int, str | None]],
    provider: str,
    *,
    start: int,
    end: int,
    expect: Literal["leave", "return"],
    window: int = REACTION_WINDOW,
) -> Reaction:
    """`served`: (arrival index, provider of the first attempt on the affected channel) of
    every affected verification, in arrival order; the change took effect before arrival
    `start`, and the next change before `end`."""
    before = [p for i, p in served if i < start][-window:]
    after = [(i, p) for i, p in served if start <= i < end]
    if not after:
        return Reaction(None, "no affected traffic")
    share_before = sum(p == provider for p in before) / len(before) if before else 0.0
    if expect == "leave" and before and share_before < THRESHOLD:
        return Reaction(0, f"not leading before ({share_before:.0%})")
    if expect == "return" and before and share_before >= THRESHOLD:
        return Reaction(0, f"still leading before ({share_before:.0%})")
    shares: list[float] = []
    for k in range(len(after)):
        recent = after[max(0, k + 1 - window) : k + 1]
        shares.append(sum(p == provider for _, p in recent) / len(recent))
    settled: int | None = None
    for k in range(len(after) - 1, -1, -1):
        done = shares[k] < THRESHOLD if expect == "leave" else shares[k] >= THRESHOLD
        if not done:
            break
        settled = k
    if settled is None:
        return Reaction(None)
    return Reaction(after[settled][0] - start + 1)


def leading(
    served: Sequence[tuple[int, str | None]], provider: str, *, before: int, window: int = REACTION_WINDOW
) -> bool:
    """Whether the provider carried at least half of the last `window` verifications before
    arrival `before`."""
    recent = [p for i, p in served if i < before][-window:]
    return bool(recent) and sum(p == provider for p in recent) / len(recent) >= THRESHOLD


def reaction_across(
    served: Mapping[str, Sequence[tuple[int, str | None]]],
    provider: str,
    *,
    start: int,
    end: int,
    expect: Literal["leave", "return"],
    led: Iterable[str],
    window: int = REACTION_WINDOW,
) -> tuple[Reaction, dict[str, Reaction]]:
    """The slowest reaction among the ranges in `led`, and each one's."""
    each = {
        operator: reaction(
            served.get(operator, ()), provider, start=start, end=end, expect=expect, window=window
        )
        for operator in led
    }
    if not each:
        return Reaction(None, "it carried none of that traffic before"), each
    if any(r.verifications is None for r in each.values()):
        return Reaction(None), each
    return Reaction(max(r.verifications or 0 for r in each.values())), each


def cost_per_approved(cost_e4: int, approved: int) -> float | None:
    """Roubles per approved verification: every verification's cost over the approved ones."""
    return cost_e4 / 10000 / approved if approved else None


def rolling(
    costs_e4: Sequence[int], approved: Sequence[bool], window: int
) -> tuple[list[int], list[float | None], list[float]]:
    """Rolling cost per approved verification and approval rate, by arrival index: one
    point per `window // 5` verifications, each over the last `window`."""
    step = max(1, window // 5)
    xs: list[int] = []
    cpa: list[float | None] = []
    rate: list[float] = []
    for end in range(window, len(costs_e4) + 1, step):
        cost = sum(costs_e4[end - window : end])
        ok = sum(approved[end - window : end])
        xs.append(end)
        cpa.append(cost_per_approved(cost, ok))
        rate.append(ok / window)
    return xs, cpa, rate
