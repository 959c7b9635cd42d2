"""docs/providers.md's error table is exactly the one the adapters' error lists generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.core.verification import Outcome
from worker.providers.registry import PROVIDER_TYPES
from worker.routing.catalog import error_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def test_the_document_holds_the_generated_error_table() -> None:
    assert error_table() in DOC.read_text(encoding="utf-8"), (
        "docs/providers.md is out of date: replace its error table with `flashcall providers errors`"
    )


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_every_provider_type_lists_its_documents_errors(kind: str) -> None:
    assert PROVIDER_TYPES[kind].errors


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_no_error_is_listed_twice_for_the_same_request(kind: str) -> None:
    keys = [(error.request, error.code) for error in PROVIDER_TYPES[kind].errors]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_no_error_is_classified_as_a_delivery(kind: str) -> None:
    assert all(error.classification.outcome is not Outcome.DELIVERED for error in PROVIDER_TYPES[kind].errors)


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_an_error_about_the_number_never_counts_against_the_breaker(kind: str) -> None:
    about_the_number = {Outcome.BAD_NUMBER, Outcome.REFUSED}
    for error in PROVIDER_TYPES[kind].errors:
        if error.classification.outcome in about_the_number:
            assert not error.classification.breaker_failure, error.code
