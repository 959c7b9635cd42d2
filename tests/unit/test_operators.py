"""Operator ranges: what learned conversion is kept per."""

from __future__ import annotations

import random
import subprocess
import sys

import phonenumbers
import pytest
from phonenumbers import carrier

from flashcall_dev.carriers import russian_ranges
from worker.core.phone import is_valid_russian, parse
from worker.routing import carriers
from worker.routing.operators import carrier_name, operator_of, prefix_table


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


def test_the_carrier_table_is_phonenumbers_own_for_plus_7() -> None:
    assert russian_ranges() == carriers.RANGES, (
        "worker/routing/carriers.py differs from the installed phonenumbers: "
        "run python -m flashcall_dev.carriers"
    )
    assert max(len(prefix) for prefix in carriers.RANGES) == carriers.LONGEST_PREFIX


def test_a_carrier_is_looked_up_as_phonenumbers_looks_it_up() -> None:
    # A number in every range of the table, and random ones between them.
    rng = random.Random(7)
    phones = [prefix + "".join(rng.choices("0123456789", k=11 - len(prefix))) for prefix in carriers.RANGES]
    phones += ["7" + "".join(rng.choices("0123456789", k=10)) for _ in range(3000)]
    for phone in phones:
        parsed = parse(phone)
        assert parsed is not None
        assert carrier_name(parsed) == carrier.name_for_number(phonenumbers.parse("+" + phone), "en"), phone


def test_a_worker_process_loads_no_other_country_s_carriers() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, worker.actors; print('phonenumbers.carrierdata' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "False"


def _longest(table: dict[str, str], phone: str) -> str:
    found = [prefix for prefix in table if phone.startswith(prefix)]
    return table[max(found, key=len)] if found else "other"


NAMED = {"moscow": ("7916123", "79261"), "moscow_core": ("79161234",)}


@pytest.mark.parametrize("named", [{}, NAMED])
def test_the_prefix_table_places_every_assigned_number_as_operator_of_does(
    named: dict[str, tuple[str, ...]],
) -> None:
    table = prefix_table(named)
    draw = random.Random(21)
    numbers = [f"79{draw.randrange(10**9):09d}" for _ in range(3000)]
    numbers += ["79161234000", "79161230000", "79261000000"]

    wrong = [n for n in numbers if is_valid_russian(n) and _longest(table, n) != operator_of(n, named)]

    assert wrong == []


def test_a_named_range_covers_the_longer_carrier_prefixes_inside_it() -> None:
    table = prefix_table({"moscow": ("7916",)})

    assert {name for prefix, name in table.items() if prefix.startswith("7916")} == {"moscow"}
