"""The HTTP API's keys (worker/api/keys.py): where they come from, what is refused, and
that only their hashes are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.api.keys import ApiKeys, hashed_entry, new_key
from worker.core.errors import ConfigurationError

KEY = "k" * 40
OTHER = "o" * 40


def test_a_key_of_the_variable_is_known_by_its_name() -> None:
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY},billing:{OTHER}"})

    assert (keys.name_of(KEY), keys.name_of(OTHER)) == ("shop", "billing")


def test_a_key_nobody_was_given_has_no_name() -> None:
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY}"})

    assert keys.name_of(KEY[:-1]) is None


def test_only_the_hashes_of_the_keys_are_kept() -> None:
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY}"})

    assert KEY.encode() not in b"".join(keys.by_digest)
    assert KEY not in repr(keys)


def test_a_hashed_line_of_the_file_admits_its_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# the shop's backend\n{hashed_entry('shop', KEY)}\n\n", encoding="utf-8")

    assert ApiKeys.from_env({"FLASHCALL_API_KEYS_FILE": str(path)}).name_of(KEY) == "shop"


def test_the_file_refuses_a_key_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"shop:{KEY}\n", encoding="utf-8")

    with pytest.raises(ConfigurationError, match="line 1: the file holds keys only hashed") as refused:
        ApiKeys.from_env({"FLASHCALL_API_KEYS_FILE": str(path)})
    assert KEY not in str(refused.value)


def test_the_variable_and_the_file_add_up(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(hashed_entry("billing", OTHER), encoding="utf-8")
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY}", "FLASHCALL_API_KEYS_FILE": str(path)})

    assert keys.names == {"shop", "billing"}


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"FLASHCALL_API_KEYS_FILE .*missing: cannot be read"):
        ApiKeys.from_env({"FLASHCALL_API_KEYS_FILE": str(tmp_path / "missing")})


def test_an_api_without_keys_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="the API has no keys"):
        ApiKeys.from_env({})


def test_a_short_key_is_refused_without_being_shown() -> None:
    with pytest.raises(ConfigurationError, match="entry 1: the key of 'shop' must be at least 32") as refused:
        ApiKeys.from_env({"FLASHCALL_API_KEYS": "shop:short-secret"})
    assert "short-secret" not in str(refused.value)


@pytest.mark.parametrize("entry", [KEY, f"a shop:{KEY}", f":{KEY}", f"{'n' * 65}:{KEY}"])
def test_an_entry_without_a_good_name_is_refused(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="expected NAME:KEY"):
        ApiKeys.from_env({"FLASHCALL_API_KEYS": entry})


def test_several_keys_may_share_a_name_while_one_is_rotated() -> None:
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY},shop:{OTHER}"})

    assert keys.name_of(KEY) == keys.name_of(OTHER) == "shop"


def test_one_key_under_two_names_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="entry 2: this key is given to both 'shop' and 'billing'"):
        ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY},billing:{KEY}"})


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (f"Bearer {KEY}", "shop"),
        (f"bearer {KEY}", "shop"),
        (f"Basic {KEY}", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_the_key_is_read_from_a_bearer_authorization(header: str | None, name: str | None) -> None:
    keys = ApiKeys.from_env({"FLASHCALL_API_KEYS": f"shop:{KEY}"})

    assert keys.name_of_header(header) == name


def test_a_new_key_is_long_enough_and_differs_each_time() -> None:
    first, second = new_key(), new_key()

    assert first != second
    assert ApiKeys.parse([("new", f"shop:{first}", False)]).name_of(first) == "shop"
