"""The code secret and its rotation: FLASHCALL_CODE_SECRET_PREVIOUS, and the proof a check
hands to flashcall_apply_check (one HMAC per accepted secret, in one call)."""

from __future__ import annotations

import pytest

from worker.core.codes import code_hash
from worker.core.errors import ConfigurationError
from worker.process.settings import Settings
from worker.verification.checks import hash_proof

CURRENT = "c" * 32
OLD = "o" * 32
OLDER = "p" * 16


def settings(previous: str) -> Settings:
    return Settings.from_env({"FLASHCALL_CODE_SECRET": CURRENT, "FLASHCALL_CODE_SECRET_PREVIOUS": previous})


def test_without_previous_secrets_only_the_current_one_is_accepted() -> None:
    assert Settings.from_env({"FLASHCALL_CODE_SECRET": CURRENT}).code_secrets == (CURRENT.encode(),)


def test_previous_secrets_are_accepted_after_the_current_one_in_the_order_given() -> None:
    assert settings(f"{OLD},{OLDER}").code_secrets == (CURRENT.encode(), OLD.encode(), OLDER.encode())


def test_spaces_around_the_commas_and_empty_entries_are_ignored() -> None:
    assert settings(f" {OLD} ,, {OLDER},").previous_code_secrets == (OLD.encode(), OLDER.encode())


def test_the_current_secret_and_repeats_in_the_previous_list_are_dropped() -> None:
    assert settings(f"{CURRENT},{OLD},{OLD}").previous_code_secrets == (OLD.encode(),)


def test_a_short_previous_secret_is_refused_by_position_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="secret number 2 is shorter than 16 bytes") as refusal:
        settings(f"{OLD},short-secret")
    assert "short-secret" not in str(refusal.value)


def test_the_proof_under_one_secret_is_the_single_hash() -> None:
    assert hash_proof([CURRENT.encode()], "order-42", "4567") == "hash:" + code_hash(
        CURRENT.encode(), "order-42", "4567"
    )


def test_the_proof_carries_one_hash_per_secret_current_first() -> None:
    proof = hash_proof([CURRENT.encode(), OLD.encode()], "order-42", "4567")
    assert proof == "hash:" + ",".join(
        code_hash(secret, "order-42", "4567") for secret in (CURRENT.encode(), OLD.encode())
    )


def test_a_proof_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="FLASHCALL_CODE_SECRET"):
        hash_proof([], "order-42", "4567")
