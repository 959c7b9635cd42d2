"""`make run` (flashcall demo) ends with an approved verification, through Redis and then
through the HTTP API with curl, whichever provider the routing file names: the demo can be
pointed at any provider by configuration alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashcall_dev.demo import run_demo
from flashcall_dev.stack import REPO_ROUTING

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("routing", [REPO_ROUTING, *EXAMPLES], ids=lambda path: path.stem)
def test_the_demo_approves_a_verification(routing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(routing_path=routing) == 0
    output = capsys.readouterr().out
    assert "final status: approved" in output
    assert "backend> curl -s" in output
    assert "final status over HTTP: approved" in output
    if routing in EXAMPLES:
        assert f"through {routing.stem}" in output
