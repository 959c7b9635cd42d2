"""The simulation's measures: reaction to a change, cost per approval, rolling windows."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.simulate.metrics import (
    REACTION_WINDOW,
    cost_per_approved,
    leading,
    reaction,
    reaction_across,
    rolling,
)


def _served(providers: Sequence[str | None], every: int = 1) -> list[tuple[int, str | None]]:
    return [(k * every, p) for k, p in enumerate(providers)]


def test_an_immediate_switch_reacts_at_the_first_verification() -> None:
    served = _served(["tel"] * 50 + ["vp"] * 50)
    assert reaction(served, "tel", start=50, end=100, expect="leave").verifications == 1


def test_reaction_counts_every_arrival_not_only_the_affected_ones() -> None:
    # Affected verifications are every other arrival: 10 affected after the change are 20 arrivals.
    providers = ["tel"] * 30 + ["tel"] * 10 + ["vp"] * 30
    served = _served(providers, every=2)
    start = 60  # the change came before arrival 60, the 31st affected one
    found = reaction(served, "tel", start=start, end=140, expect="leave")
    # The share over the affected ones since the change falls below one half at the 21st
    # (10 tel then 11 vp), arrival 60 + 2 * 20 = 100.
    assert found.verifications == 100 - start + 1


def test_a_reaction_must_stay() -> None:
    # Leaves, comes back for a long stretch, then leaves for good.
    after = ["vp"] * 30 + ["tel"] * 40 + ["vp"] * 30
    served = _served(["tel"] * 20 + after)
    found = reaction(served, "tel", start=20, end=120, expect="leave")
    # The last stretch of vp begins at arrival 90; the window of the last 20 holds 11 of them
    # at arrival 100: the 81st verification since the change.
    assert REACTION_WINDOW == 20
    assert found.verifications == 81


def test_never_reacting_and_nothing_to_react_to() -> None:
    served = _served(["tel"] * 100)
    assert reaction(served, "tel", start=50, end=100, expect="leave").verifications is None
    assert str(reaction(served, "tel", start=50, end=100, expect="leave")) == "never"
    not_leading = reaction(_served(["vp"] * 100), "tel", start=50, end=100, expect="leave")
    assert not_leading.verifications == 0
    assert "not leading" in not_leading.note
    assert reaction(served, "tel", start=100, end=100, expect="leave").note == "no affected traffic"


def test_returning_traffic() -> None:
    served = _served(["tel"] * 20 + ["vp"] * 20 + ["vp"] * 5 + ["tel"] * 30)
    found = reaction(served, "tel", start=40, end=75, expect="return")
    # After the change: 5 vp then tel; the share of the last (at most 20) reaches one half at
    # the 10th verification since the change (5 vp, 5 tel).
    assert found.verifications == 10
    assert reaction(served, "tel", start=10, end=20, expect="return").note.startswith("still leading")


def test_a_skipped_step_counts_as_traffic_taken_off() -> None:
    served = _served(["tel"] * 20 + [None] * 20)
    assert reaction(served, "tel", start=20, end=40, expect="leave").verifications == 1


def test_cost_per_approved() -> None:
    assert cost_per_approved(35_000, 10) == pytest.approx(0.35)
    assert cost_per_approved(35_000, 0) is None


def test_rolling_windows() -> None:
    costs = [3500] * 100 + [7000] * 100
    approved = [True] * 100 + [i % 2 == 0 for i in range(100)]
    xs, cpa, rate = rolling(costs, approved, 50)
    assert xs[0] == 50
    assert xs[-1] == 200
    assert cpa[0] == pytest.approx(0.35)
    assert rate[0] == 1.0
    assert cpa[-1] == pytest.approx(1.4)
    assert rate[-1] == 0.5


def test_reaction_across_ranges_is_the_slowest_where_there_was_traffic_to_move() -> None:
    # Two ranges interleaved (mts even arrivals, t2 odd); the provider led only mts, and left
    # it 5 mts verifications after the change; t2 never had it.
    mts = [(2 * k, "tel" if k < 25 else "vp") for k in range(50)]
    t2 = [(2 * k + 1, "vp") for k in range(50)]
    served = {"mts": mts, "t2": t2}
    start = 40  # the 21st mts verification
    led = [op for op in served if leading(served[op], "tel", before=start)]
    assert led == ["mts"]
    combined, each = reaction_across(served, "tel", start=start, end=100, expect="leave", led=led)
    # mts: 5 tel (arrivals 40..48) then vp from 50; the share of the last 20 since the change
    # falls below one half at the 11th mts verification after it, arrival 60.
    assert each["mts"].verifications == 60 - start + 1
    assert combined.verifications == each["mts"].verifications
    nothing, _ = reaction_across(served, "tel", start=start, end=100, expect="leave", led=[])
    assert nothing.verifications is None
    assert nothing.note


def test_one_range_that_never_reacts_makes_the_router_never_react() -> None:
    served = {"mts": [(k, "vp") for k in range(40)], "t2": [(k, "tel") for k in range(40)]}
    combined, _ = reaction_across(served, "tel", start=20, end=40, expect="leave", led=["mts", "t2"])
    assert combined.verifications is None
