"""The soak's short version: two worker groups, the callback receiver and producers on
Redis under Sentinel, a planned failover and a rolling restart of a group under steady
load; nothing lost, nobody called twice, memory flat (`make soak` runs it for 30 min)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak.__main__ import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_a_short_soak_with_a_failover_and_a_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    argv = [
        "--minutes",
        "0.5",
        "--rate",
        "40",
        "--sample-every",
        "2",
        "--docs",
        str(tmp_path),
        "--results",
        str(results),
    ]

    exit_code = main(argv)

    result = json.loads(results.read_text())
    assert (result["tally"]["lost"], result["tally"]["called_twice"]) == (0, 0)
    assert result["tally"]["accepted"] >= 1000
    assert exit_code == 0, (tmp_path / "soak.md").read_text()
    assert (tmp_path / "soak" / "memory.png").stat().st_size > 0
