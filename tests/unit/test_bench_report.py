"""The benchmark's targets table: which run each target reads, and when it is met or missed."""

from __future__ import annotations

from typing import Any

from bench.harness import LATENCIES
from bench.report import TARGETS, Target, api_section, cpu_table, targets_intro, targets_table
from bench.scenarios import script_called
from worker.redis import functions


def _results() -> dict[str, Any]:
    """A run that meets every target."""
    return {
        "machine": {"cpus": 2},
        "throughput": [
            {
                "latency_ms": latency,
                "processes": 2,
                "project": {"rate": 600.0},
                "worker_cpu_ms_per_verification": 1.5,
                "baselines": [
                    {"label": "bare_actor (2x8)", "rate": 500.0},
                    {"label": "bare_async_actor (2x256)", "rate": 400.0},
                ],
            }
            for latency in LATENCIES
        ],
        "approval": [
            {
                "latency_ms": latency,
                "redis_cpu_ms_per_verification": 0.3,
                "commands_per_verification": 25.0,
                "worker_cpu_ms_per_verification": 2.5,
            }
            for latency in LATENCIES
        ],
        "commands": {"idle_commands_per_process_per_second": 10.0},
        "quiet_checks": {"provider": {"p99_ms": 8.0}, "router": {"p99_ms": 4.0}},
        "breaker": {"overhead_p99_ms": 5.0},
        "memory": {"peak_rss_mb": 90.0},
        "api": _api(),
    }


def _api() -> dict[str, Any]:
    """The API part of a run within its targets."""
    pair = {
        "redis": {"n": 50, "p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 5.0},
        "api": {"n": 50, "p50_ms": 3.5, "p95_ms": 6.0, "p99_ms": 9.0},
        "difference_p50_ms": 1.5,
        "difference_p99_ms": 4.0,
    }
    return {
        "status_reads": {
            "connections": 32,
            "pinned": True,
            "api_cores": [1],
            "generator_cores": [0],
            "count": 30000,
            "seconds": 12.0,
            "requests_per_second": 2500.0,
            "api_cpu_ms_per_request": 0.38,
            "api_cpu_share": 0.97,
            "generator_cpu_share": 0.45,
            "api_core_busy": 0.99,
            "generator_cores_busy": 0.7,
            "p50_ms": 12.0,
            "p99_ms": 30.0,
        },
        "checks": {"quiet": dict(pair), "load": {**pair, "verifications": 9000}},
    }


def _verdict(results: dict[str, Any], starts: str) -> str:
    [target] = [target for target in TARGETS if target.name.startswith(starts)]
    return target.verdict(target.measured(results))


def _set(results: dict[str, Any], latency: int, section: str, **figures: Any) -> None:
    runs = results["approval"] if section == "approval" else results["throughput"]
    [run] = [run for run in runs if run["latency_ms"] == latency]
    run.update(figures)


def test_a_run_within_every_target_meets_them_all() -> None:
    results = _results()
    assert {target.verdict(target.measured(results)) for target in TARGETS} == {"met"}


def test_the_table_has_a_row_for_every_target_of_issues_20_and_22() -> None:
    assert len(TARGETS) == 18
    rows = targets_table(_results()).splitlines()[2:]
    assert len(rows) == len(TARGETS)
    assert all(row.startswith(f"| {target.name} |") for row, target in zip(rows, TARGETS, strict=True))


def test_a_figure_above_its_ceiling_is_missed_by_the_difference() -> None:
    results = _results()
    _set(results, 0, "approval", redis_cpu_ms_per_verification=0.55)
    assert _verdict(results, "Redis CPU per verification") == "**missed** by 0.15 ms"


def test_a_figure_on_its_limit_is_met() -> None:
    results = _results()
    _set(results, 0, "approval", commands_per_verification=30.0)
    assert _verdict(results, "Redis commands per verification") == "met"


def test_a_ratio_below_its_floor_is_missed_by_the_shortfall() -> None:
    results = _results()
    _set(results, 500, "throughput", project={"rate": 300.0})
    assert _verdict(results, "throughput vs bare_async_actor, 500 ms") == "**missed** by 0.25x"
    assert _verdict(results, "throughput vs bare_async_actor, 100 ms") == "met"


def test_the_instant_provider_is_held_to_the_faster_baseline() -> None:
    results = _results()
    _set(results, 0, "throughput", project={"rate": 450.0})
    assert _verdict(results, "throughput vs bare_async_actor, 0 ms") == "met"
    assert _verdict(results, "throughput vs the faster baseline") == "**missed** by 0.1x"


def test_per_verification_costs_are_read_from_the_instant_provider_runs() -> None:
    results = _results()
    _set(results, 2000, "approval", worker_cpu_ms_per_verification=9.0)
    _set(results, 2000, "throughput", worker_cpu_ms_per_verification=9.0)
    assert _verdict(results, "worker CPU per verification, start to approval") == "met"
    assert _verdict(results, "worker CPU per verification, start to delivered") == "met"
    _set(results, 0, "throughput", worker_cpu_ms_per_verification=2.5)
    assert _verdict(results, "worker CPU per verification, start to delivered") == "**missed** by 0.5 ms"


def test_the_planned_ceiling_follows_redis_cpu_per_verification() -> None:
    results = _results()
    [ceiling] = [target for target in TARGETS if "ceiling" in target.name]
    _set(results, 0, "approval", redis_cpu_ms_per_verification=0.35)
    assert ceiling.measured(results) == 2000
    _set(results, 0, "approval", redis_cpu_ms_per_verification=0.5)
    assert ceiling.verdict(ceiling.measured(results)) == "**missed** by 300/s"


def test_a_measurement_the_run_lacks_is_not_measured() -> None:
    results = _results()
    del results["quiet_checks"]
    results["approval"] = [run for run in results["approval"] if run["latency_ms"] != 0]
    assert _verdict(results, "check round trip on a quiet worker, code checked by Telphin") == "not measured"
    assert _verdict(results, "Redis CPU per verification") == "not measured"
    assert "| not measured |" in targets_table(results)


def test_a_target_states_its_goal_with_its_direction() -> None:
    assert Target("x", 0.4, " ms", lambda results: None, "").goal == "≤ 0.4 ms"
    assert Target("x", 1700, "/s", lambda results: None, "", at_most=False).goal == "≥ 1,700/s"


def test_the_cpu_table_adds_up_each_worker_with_redis_and_the_sandbox_beside_it() -> None:
    results = _results()
    instant = results["throughput"][0]
    instant["cpu_ms_per_verification"] = {"worker": 1.5, "redis": 0.2, "sandbox": 0.2}
    instant["baselines"][0]["cpu_ms_per_verification"] = {"worker": 1.4, "redis": 0.1, "sandbox": 0.15}
    rows = [line for line in cpu_table(results).splitlines() if line.startswith("| ")][1:]
    assert rows[0].split("|")[1:-1] == [" **project** ", " 600 ", " 1.5 ", " 0.2 ", " 0.2 ", " 1.9 "]
    assert rows[1].split("|")[1:-1] == [" bare_actor (2x8) ", " 500 ", " 1.4 ", " 0.1 ", " 0.15 ", " 1.65 "]


def test_a_run_without_cpu_figures_has_no_cpu_table() -> None:
    assert cpu_table(_results()) == ""


def test_monitor_and_slowlog_lines_name_the_function_or_script_they_call() -> None:
    start, status = functions.start("{}").name, functions.status("a").name
    assert script_called(f'FCALL {start} 0 {{"id": "a b"}}') == start
    assert script_called(f"FCALL_RO {status} 0 a") == status
    assert script_called("EVALSHA 0123456789abcdef 1 flashcall requeue checks") == "dramatiq requeue"
    acks = "EVALSHA 0123456789abcdef 2 flashcall:__acks__.3f0c-77.checks flashcall:checks.msgs m1"
    assert script_called(acks) == "script 01234567 on flashcall:__acks__.*.checks"
    assert script_called("HGETALL flashcall:v:a") is None


def test_the_api_is_held_to_2000_reads_a_second_and_10_ms_over_the_redis_p99() -> None:
    results = _results()
    results["api"]["status_reads"]["requests_per_second"] = 1800.0
    results["api"]["checks"]["load"]["difference_p99_ms"] = 12.5
    assert _verdict(results, "API status reads on one core") == "**missed** by 200/s"
    assert _verdict(results, "API check p99 over the Redis check p99, quiet worker") == "met"
    assert _verdict(results, "API check p99 over the Redis check p99, under") == "**missed** by 2.5 ms"


def test_a_run_without_the_api_part_has_its_targets_not_measured() -> None:
    results = _results()
    del results["api"]
    api = [target for target in TARGETS if target.name.startswith("API ")]
    assert len(api) == 3
    assert {target.verdict(target.measured(results)) for target in api} == {"not measured"}


def test_the_api_section_tells_reads_cpu_and_both_sides_of_each_check() -> None:
    text = api_section(_api())
    assert "**2,500** (30000 in 12.0 s)" in text
    assert "| API CPU per request | 0.38 ms |" in text
    assert "| generator process CPU | 45% of a core |" in text
    assert "pinned to core 1" in text
    rows = [
        line for line in text.splitlines() if line.startswith("| quiet worker") or line.startswith("| under")
    ]
    assert rows == [
        "| quiet worker, right code | 50 | 3.5 / 6 / 9 | 2 / 3 / 5 | 1.5 / 4 |",
        "| under the 500 ms load, wrong code | 50 | 3.5 / 6 / 9 | 2 / 3 / 5 | 1.5 / 4 |",
    ]


def test_an_api_part_merged_alone_says_when_it_was_measured() -> None:
    measured = {**_api(), "machine": {"date": "2026-12-07 12:30 UTC", "commit": "abc1234"}}
    assert "Measured on 2026-12-07 12:30 UTC at commit abc1234" in api_section(measured)
    assert "Measured on" not in api_section(_api())


def test_the_page_says_when_the_api_targets_come_from_a_run_of_their_own() -> None:
    results = _results()
    assert targets_intro(results) == "Every target of issues 20 and 22, from this one run."
    results["api"]["machine"] = {"date": "2026-12-07 12:30 UTC", "commit": "abc1234"}
    assert "the API's from its part run alone" in targets_intro(results)
