"""`python -m bench.capacity` works end to end: a tiny run of two steps writes the JSON,
the page and its plot. The figures of such a short run mean nothing; the full run measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.capacity.__main__ import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTES = Path(__file__).resolve().parents[2] / "bench" / "capacity" / "notes.md"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("capacity")
    argv = ["--groups", "1,2", "--count", "150", "--latency-ms", "50"]
    argv += ["--docs", str(out / "docs"), "--results", str(out / "results.json")]
    assert main(argv) == 0
    return out


def _results(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.timeout(120)
def test_each_step_approves_verifications_and_measures_what_they_cost_redis(quick_run: Path) -> None:
    steps = _results(quick_run)["steps"]
    assert [step["groups"] for step in steps] == [1, 2]
    for step in steps:
        assert step["approved"] > 0
        assert step["approved_per_second"] > 0
        assert step["redis_cpu_ms_per_verification"] > 0
        assert step["commands_per_verification"] > 0
        assert step["ceiling"]["planned"] < step["ceiling"]["at_one_core"]


@pytest.mark.timeout(120)
def test_the_projected_ceiling_is_that_of_the_step_dearest_to_redis(quick_run: Path) -> None:
    results = _results(quick_run)
    dearest = max(results["steps"], key=lambda step: step["redis_cpu_ms_per_verification"])
    assert results["ceiling"] == {"groups": dearest["groups"], **dearest["ceiling"]}


@pytest.mark.timeout(120)
def test_the_page_holds_the_table_the_plot_and_the_notes(quick_run: Path) -> None:
    page = (quick_run / "docs" / "scaling.md").read_text(encoding="utf-8")
    assert page.startswith("# Scaling past one host\n")
    assert "| worker groups | approved/s |" in page
    assert "](scaling/throughput.png)" in page
    assert page.endswith(NOTES.read_text(encoding="utf-8"))
    assert (quick_run / "docs" / "scaling" / "throughput.png").read_bytes().startswith(b"\x89PNG")
