"""The simulation's world: reproducible, the same luck for a user under every router, and
numbers in the operator ranges the router itself names."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.simulate.scenarios import COSTS, LEARNING, ORACLE_LEARNING, SCENARIOS, base_rates, routing_document
from bench.simulate.world import DEFAULT_DELAYS, MIX, Delays, World, arrivals, uniform
from worker.core.verification import Channel
from worker.routing.config import load_routing
from worker.routing.operators import operator_of


def _operator(phone: str) -> str:
    return operator_of(phone, {})


def test_uniform_is_fixed_by_its_parts_and_spread() -> None:
    assert uniform(1, "a", 2) == uniform(1, "a", 2)
    assert uniform(1, "a", 2) != uniform(2, "a", 2)
    draws = [uniform(7, i) for i in range(5000)]
    assert all(0 <= u < 1 for u in draws)
    assert abs(statistics.mean(draws) - 0.5) < 0.02


def test_arrivals_repeat_and_are_distinct_numbers_of_their_operator() -> None:
    first = list(arrivals(3, 2000, _operator))
    assert first == list(arrivals(3, 2000, _operator))
    assert len({a.phone for a in first}) == len(first)
    assert all(_operator(a.phone) == a.operator for a in first)
    assert all(len(a.phone) == 11 and a.phone.startswith("79") for a in first)
    for operator, share in MIX.items():
        seen = sum(a.operator == operator for a in first) / len(first)
        assert abs(seen - share) < 0.04, operator


def test_a_user_has_the_same_luck_whoever_serves_them() -> None:
    one = World(seed=5, rates=base_rates())
    two = World(seed=5, rates=base_rates())
    for index in range(200):
        assert one.reaches(index, "telphin", Channel.FLASHCALL, "mts", 0) == two.reaches(
            index, "telphin", Channel.FLASHCALL, "mts", 0
        )
        assert one.delay_s(index, "telphin", Channel.FLASHCALL, 0) == two.delay_s(
            index, "telphin", Channel.FLASHCALL, 0
        )
        assert one.abandons(index) == two.abandons(index)


def test_reach_follows_the_rate_and_its_changes() -> None:
    world = World(seed=11, rates=base_rates())
    n = 4000
    reached = sum(world.reaches(i, "gateway", Channel.FLASHCALL, "t2", 0) for i in range(n)) / n
    assert abs(reached - 0.45) < 0.03
    world.set_rate("gateway", Channel.FLASHCALL, "t2", 0.1)
    reached = sum(world.reaches(i, "gateway", Channel.FLASHCALL, "t2", 0) for i in range(n)) / n
    assert abs(reached - 0.1) < 0.02
    assert world.conversion("gateway", Channel.FLASHCALL, "t2") == 0.1 * (1 - world.abandon)


def test_delays_stay_within_the_step_timeouts() -> None:
    world = World(seed=2, rates=base_rates())
    timeouts = {Channel.FLASHCALL: 60, Channel.VOICE: 90}
    for channel, timeout in timeouts.items():
        delays = [world.delay_s(i, "voicepassword", channel, 0) for i in range(3000)]
        assert min(delays) >= DEFAULT_DELAYS[channel].floor_s
        assert max(delays) < timeout
        assert abs(statistics.mean(delays) - DEFAULT_DELAYS[channel].mean_s) < 1.0


def test_delay_draw_is_log_normal_around_its_median() -> None:
    delays = Delays(floor_s=0, median_s=10, sigma=0.5, cap_s=1000)
    assert math.isclose(delays.draw(math.exp(-0.5), 0.25), 10.0)  # cos(pi/2) = 0: the median


@pytest.mark.parametrize("learning", [None, LEARNING, ORACLE_LEARNING])
def test_the_routers_routing_files_are_valid(tmp_path: Path, learning: Mapping[str, Any] | None) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing_document(COSTS, learning)), encoding="utf-8")
    env = dict.fromkeys(
        (
            "SIM_VOICEPASSWORD_API_KEY",
            "SIM_MOBILGROUP_API_KEY",
            "SIM_TELPHIN_APP_ID",
            "SIM_TELPHIN_APP_SECRET",
            "SIM_GATEWAY_LOGIN",
            "SIM_GATEWAY_PASSWORD",
        ),
        "sandbox",
    )
    config = load_routing(path, env)
    assert (config.learning is None) == (learning is None)
    assert (
        config.providers["telphin"].channels[Channel.FLASHCALL].cost == COSTS[("telphin", Channel.FLASHCALL)]
    )


def test_scenario_changes_fall_within_the_run() -> None:
    assert set(SCENARIOS) == {"steady", "outage", "degradation", "price", "operator"}
    assert all(0 < change.at < 1 for s in SCENARIOS.values() for change in s.changes)
