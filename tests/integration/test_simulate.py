"""`make simulate` in small: the real router against the sandbox in accelerated time, and
its accounting adds up (the targets need the full run: `make simulate`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.simulate import pumping
from bench.simulate.__main__ import main
from bench.simulate.engine import RouterKind, RunResult, SandboxEndpoints, Simulation
from bench.simulate.scenarios import SCENARIOS
from flashcall_dev.stack import LocalStack, local_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 200


@pytest.fixture(scope="module")
def sim_stack() -> Iterator[LocalStack]:
    # Not the session's stack: a run flushes Redis and resets the sandbox.
    with local_stack() as started:
        yield started


def _run(stack: LocalStack, scenario: str, router: RouterKind) -> RunResult:
    simulation = Simulation(
        SCENARIOS[scenario],
        router,
        redis_url=stack.redis_url,
        sandbox=SandboxEndpoints(stack.sandbox_url, stack.provider_urls),
        count=COUNT,
        seed=3,
    )
    return asyncio.run(simulation.run())


@pytest.mark.parametrize("router", list(RouterKind))
def test_a_run_through_an_outage_accounts_for_every_verification_and_rouble(
    sim_stack: LocalStack, router: RouterKind
) -> None:
    result = _run(sim_stack, "outage", router)
    audit = result.audit
    assert result.count == COUNT
    assert sum(result.statuses.values()) == COUNT
    assert audit["all_final"], result.statuses
    # What the verifications were charged is what the library recorded as delivered, and
    # every delivery is a call or SMS the sandbox placed.
    assert audit["charged_matches_deliveries"], audit
    assert audit["placed_matches_delivered"], audit
    assert sum(result.costs_e4) == result.cost_e4
    assert sum(result.approvals) == result.approved == audit["checks"].get("approved", 0)
    assert result.cost_per_approved == pytest.approx(result.cost_e4 / 10000 / result.approved)
    assert result.approval_rate > 0.8
    assert sum(sum(by.values()) for by in result.first_flash.values()) == COUNT
    assert {r["expect"] for r in result.reactions} == {"leave", "return"}
    assert result.learning == (router is not RouterKind.STATIC)


def test_a_run_repeats_exactly(sim_stack: LocalStack) -> None:
    first = _run(sim_stack, "degradation", RouterKind.LEARNED)
    again = _run(sim_stack, "degradation", RouterKind.LEARNED)
    assert first.costs_e4 == again.costs_e4
    assert first.approvals == again.approvals
    assert first.attempts == again.attempts


def test_the_command_writes_the_table_the_plots_and_the_results(tmp_path: Path) -> None:
    docs, results = tmp_path / "docs", tmp_path / "results.json"
    code = main(["price", "--count", "150", "--jobs", "3", "--docs", str(docs), "--results", str(results)])
    # 150 verifications are too few for learning to meet its targets: only that it ran counts.
    assert code in (0, 4)
    page = (docs / "routing-quality.md").read_text(encoding="utf-8")
    assert "| price | learned | 150 |" in page
    assert (docs / "routing-quality" / "price.png").stat().st_size > 10_000
    saved = json.loads(results.read_text(encoding="utf-8"))
    assert {run["router"] for run in saved["runs"]} == {"learned", "static", "oracle"}
    assert saved["targets"]


@pytest.fixture(scope="module")
def pumped() -> dict[str, Any]:
    return pumping.run(pumping.Plan.quick(), lambda text: None)


def test_a_pumped_range_is_held_before_the_attack_gets_fifty_calls_paid(pumped: dict[str, Any]) -> None:
    assert 0 < pumped["calls_paid_to_attack"] < pumping.CALLS_TARGET
    assert set(pumped["held_after_attack_began_s"]) == set(pumping.BOT_RANGES)


def test_legitimate_users_are_not_refused_by_the_guard(pumped: dict[str, Any]) -> None:
    assert pumped["legit_started"] > 0
    assert pumped["legit_refused"] == 0


def test_each_pumped_range_is_released_once_the_attack_stopped(pumped: dict[str, Any]) -> None:
    assert set(pumped["released_after_attack_stopped_s"]) == set(pumping.BOT_RANGES)
