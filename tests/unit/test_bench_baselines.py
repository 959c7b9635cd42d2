"""The baselines `make bench` runs are ../shared/bench's, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORIGINALS = ROOT.parent / "shared" / "bench"
COPIES = ROOT / "bench" / "baselines"


@pytest.mark.parametrize("name", ["bare_actor.py", "bare_async_actor.py"])
def test_the_copied_baseline_is_byte_for_byte_the_original(name: str) -> None:
    original = ORIGINALS / name
    if not original.exists():
        pytest.skip(f"{ORIGINALS} is not on this machine")
    assert (COPIES / name).read_bytes() == original.read_bytes()
