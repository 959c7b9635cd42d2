"""The Python side of the one definition of a valid phone number and client address: the
same tables (tests/cases/) that flashcall_start is tested against in
tests/integration/test_library_validation.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import cases
from worker.client import shard_of
from worker.core.addresses import is_client_ip
from worker.core.phone import normalise

PHONES = cases("phones")
IPS = cases("ips")


def _why(case: dict[str, Any]) -> str:
    return str(case["why"])


@pytest.mark.parametrize("case", [c for c in PHONES if c["normal"]], ids=_why)
def test_a_number_the_library_accepts_is_normalised_to_what_it_stores(case: dict[str, Any]) -> None:
    assert normalise(case["input"]) == case["normal"]


@pytest.mark.parametrize("case", [c for c in PHONES if not c["normal"]], ids=_why)
def test_a_number_the_library_refuses_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a Russian number"):
        normalise(case["input"])


@pytest.mark.parametrize("case", [c for c in PHONES if not c["normal"]], ids=_why)
def test_no_shard_is_chosen_for_a_number_the_library_refuses(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a Russian number"):
        shard_of(case["input"], 4)


@pytest.mark.parametrize("case", [c for c in PHONES if c["normal"]], ids=_why)
def test_a_number_picks_the_shard_of_its_stored_form(case: dict[str, Any]) -> None:
    assert shard_of(case["input"], 4) == shard_of(case["normal"], 4)


@pytest.mark.parametrize("case", IPS, ids=_why)
def test_a_client_address_is_valid_exactly_when_the_library_accepts_it(case: dict[str, Any]) -> None:
    assert is_client_ip(case["input"]) is case["valid"]


@pytest.mark.parametrize("value", [None, 3232235777, b"1.2.3.4", ["1.2.3.4"]], ids=repr)
def test_a_client_address_that_is_not_a_string_is_not_valid(value: object) -> None:
    assert is_client_ip(value) is False
