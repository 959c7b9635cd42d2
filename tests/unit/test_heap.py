"""freeze_long_lived: what a process built at start leaves the collector's generations."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker.process.heap import freeze_long_lived


@pytest.fixture
def thawed() -> Iterator[None]:
    """The collector as the test found it: the suite's own objects go back after the test."""
    yield
    gc.unfreeze()


def test_what_is_alive_goes_where_full_collections_do_not_look(thawed: None) -> None:
    built = {"application": ["routes"]}

    freeze_long_lived()

    assert all(built is not tracked for tracked in gc.get_objects())
    assert gc.get_freeze_count() > 0


def test_what_is_made_later_is_collected_as_before(thawed: None) -> None:
    freeze_long_lived()

    made = {"request": ["body"]}

    assert any(made is tracked for tracked in gc.get_objects())
