"""`make bench` works end to end: a tiny run of every scenario writes the table, the plot
and the JSON. The figures of such a short run mean nothing; `make bench` measures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker.redis import functions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--docs", str(out), "--results", str(out / "run.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return out


@pytest.mark.timeout(660)
def test_the_page_holds_the_targets_the_throughput_table_and_every_section(quick_run: Path) -> None:
    page = (quick_run / "benchmarks.md").read_text(encoding="utf-8")
    for heading in (
        "## Targets",
        "## Throughput, start to delivered",
        "## Throughput, start to approval",
        "### Check round trip",
        "### Breaker open",
        "### Redis per verification on a quiet worker",
        "### Redis on an idle worker",
        "### A replica attached",
        "### Memory",
        "### The sandbox is no bottleneck",
        "### The HTTP API",
    ):
        assert heading in page


@pytest.mark.timeout(660)
def test_every_target_was_measured_in_the_one_run(quick_run: Path) -> None:
    targets = (quick_run / "benchmarks.md").read_text(encoding="utf-8").split("## Throughput")[0]
    assert "| met |" in targets or "| **missed** by" in targets
    assert "not measured" not in targets


@pytest.mark.timeout(660)
def test_at_every_latency_each_verification_started_was_approved(quick_run: Path) -> None:
    approval = json.loads((quick_run / "run.json").read_text(encoding="utf-8"))["approval"]
    assert [run["latency_ms"] for run in approval] == [0, 100, 500, 2000]
    assert all(run["count"] > 0 and run["unfinished"] == 0 for run in approval)
    assert all(run["redis_cpu_ms_per_verification"] > 0 for run in approval)


@pytest.mark.timeout(660)
def test_the_quiet_worker_answered_codes_checked_by_telphin_and_by_the_router(quick_run: Path) -> None:
    quiet = json.loads((quick_run / "run.json").read_text(encoding="utf-8"))["quiet_checks"]
    assert quiet["provider"]["n"] > 0
    assert quiet["router"]["n"] > 0


@pytest.mark.timeout(660)
def test_redis_costs_are_told_per_library_function(quick_run: Path) -> None:
    commands = json.loads((quick_run / "run.json").read_text(encoding="utf-8"))["commands"]
    timed = {row["name"]: row for row in commands["functions"]}
    for called in (functions.start("{}").name, functions.check("{}").name):
        assert timed[called]["calls"] == 1
        assert timed[called]["commands_per_call"] > 0
        assert timed[called]["usec_per_call"] > 0
    assert commands["idle_commands_per_process_per_second"] > 0


@pytest.mark.timeout(660)
def test_the_plot_is_drawn(quick_run: Path) -> None:
    assert (quick_run / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(660)
def test_every_throughput_run_measured_the_project_beside_a_baseline(quick_run: Path) -> None:
    results = json.loads((quick_run / "run.json").read_text(encoding="utf-8"))
    for run in results["throughput"]:
        assert run["project"]["count"] > 0
        assert run["baselines"]
        assert all(baseline["count"] > 0 for baseline in run["baselines"])
        assert run["ratio"] is not None


@pytest.mark.timeout(660)
def test_with_a_replica_attached_every_claim_waits_for_it_and_without_none_does(quick_run: Path) -> None:
    replica = json.loads((quick_run / "run.json").read_text(encoding="utf-8"))["replica"]
    assert replica["alone"]["count"] > 0
    assert replica["alone"]["wait_per_verification"] == 0
    assert replica["replica"]["wait_per_verification"] >= 1


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API part alone, merged into a copy of the committed results."""
    out = tmp_path_factory.mktemp("bench-api")
    shutil.copy(ROOT / "bench" / "results.json", out / "run.json")
    argv = [sys.executable, "-m", "bench", "--only", "api", "--quick", "--merge"]
    finished = subprocess.run(
        [*argv, "--docs", str(out), "--results", str(out / "run.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return out


@pytest.mark.timeout(300)
def test_the_api_part_reports_status_reads_and_both_sides_of_each_check(api_run: Path) -> None:
    measured = json.loads((api_run / "run.json").read_text(encoding="utf-8"))["api"]
    reads = measured["status_reads"]
    assert reads["count"] > 0
    for figure in ("requests_per_second", "api_cpu_ms_per_request", "api_cpu_share", "generator_cpu_share"):
        assert reads[figure] > 0
    for when in ("quiet", "load"):
        compared = measured["checks"][when]
        assert compared["api"]["n"] == compared["redis"]["n"] > 0
        assert all(math.isfinite(compared[f"difference_{p}_ms"]) for p in ("p50", "p99"))


@pytest.mark.timeout(300)
def test_the_merged_api_part_joins_the_page_and_its_targets(api_run: Path) -> None:
    page = (api_run / "benchmarks.md").read_text(encoding="utf-8")
    assert "### The HTTP API" in page
    targets = page.split("## Throughput")[0]
    api_rows = [line for line in targets.splitlines() if line.startswith("| API ")]
    assert len(api_rows) == 3
    assert not any("not measured" in row for row in api_rows)
