"""Operator ranges: what learned conversion is kept per."""

from __future__ import annotations

import pytest

from worker.routing.operators import operator_of


@pytest.mark.parametrize(
    ("phone", "operator"),
    [
        ("79031234567", "beeline"),
        ("79211234567", "megafon"),
        ("79501234567", "t2"),
        ("79161234567", "mts"),
        ("79851234567", "mts"),
    ],
)
def test_a_number_goes_by_the_carrier_its_range_was_allocated_to(phone: str, operator: str) -> None:
    assert operator_of(phone, {}) == operator


def test_a_range_of_no_known_mobile_carrier_is_other() -> None:
    assert operator_of("74951234567", {}) == "other"


def test_a_named_range_wins_over_the_carrier() -> None:
    assert operator_of("79031234567", {"north": ("7903",)}) == "north"


def test_the_longest_named_prefix_wins() -> None:
    assert operator_of("79031234567", {"wide": ("790",), "narrow": ("79031",)}) == "narrow"
