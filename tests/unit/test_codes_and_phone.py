"""Verification codes (generation, keyed hashes) and Russian phone numbers
(validation beyond shape, masking for logs)."""

from __future__ import annotations

import hashlib
import hmac
import random

import phonenumbers
import pytest

from worker.core.codes import code_hash, generate
from worker.core.phone import is_valid_russian, mask

SECRET = b"unit-test-code-secret"

# --- generate -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [4, 5, 6])
def test_generated_code_has_the_requested_number_of_digits(length: int) -> None:
    code = generate(length)

    assert len(code) == length
    assert code.isdigit()
    assert code.isascii()


def test_generated_codes_differ() -> None:
    codes = {generate(6) for _ in range(20)}

    assert len(codes) > 1


def test_generated_codes_use_every_digit_including_a_leading_zero() -> None:
    codes = [generate(4) for _ in range(200)]

    assert set("".join(codes)) == set("0123456789")
    assert any(code.startswith("0") for code in codes)


# --- code_hash ------------------------------------------------------------------------


def test_code_hash_is_hmac_sha256_of_id_and_code_under_the_secret() -> None:
    expected = hmac.new(SECRET, b"order-42:4821", hashlib.sha256).hexdigest()

    assert code_hash(SECRET, "order-42", "4821") == expected


def test_code_hash_is_stable() -> None:
    assert code_hash(SECRET, "order-42", "4821") == code_hash(SECRET, "order-42", "4821")


def test_code_hash_is_bound_to_the_verification() -> None:
    assert code_hash(SECRET, "order-42", "4821") != code_hash(SECRET, "order-43", "4821")


def test_code_hash_is_bound_to_the_secret() -> None:
    assert code_hash(SECRET, "order-42", "4821") != code_hash(b"another-secret", "order-42", "4821")


def test_code_hash_is_64_hex_digits_unlike_an_unkeyed_hash_of_the_code() -> None:
    digest = code_hash(SECRET, "order-42", "4821")

    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert digest != hashlib.sha256(b"4821").hexdigest()
    assert digest != hashlib.sha256(b"order-42:4821").hexdigest()


# --- is_valid_russian -----------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    ["79991234567", "79161234567", "74951234567", "78123456789"],
    ids=["mobile-999", "mobile-916", "moscow-landline", "st-petersburg-landline"],
)
def test_assigned_russian_number_is_valid(phone: str) -> None:
    assert is_valid_russian(phone) is True


@pytest.mark.parametrize(
    "phone",
    ["77012345678", "77272123456", "70001234567", "7999123456", "799912345678", "89991234567", "", "abc"],
    ids=[
        "kazakhstan-mobile",
        "kazakhstan-almaty",
        "unassigned-7000",
        "too-short",
        "too-long",
        "trunk-prefix-8",
        "empty",
        "letters",
    ],
)
def test_number_that_is_not_an_assigned_russian_one_is_invalid(phone: str) -> None:
    assert is_valid_russian(phone) is False


def test_validity_is_phonenumbers_own() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        phone = "7" + "".join(rng.choices("0123456789", k=10))
        number = phonenumbers.parse("+" + phone)
        russian = phonenumbers.region_code_for_number(number) == "RU"
        assert is_valid_russian(phone) is (russian and phonenumbers.is_valid_number(number)), phone


# --- mask -----------------------------------------------------------------------------


def test_mask_keeps_country_operator_code_and_last_two_digits() -> None:
    assert mask("79991234567") == "+7999*****67"


def test_masks_of_different_numbers_can_be_told_apart() -> None:
    assert mask("79991234567") != mask("79161234598")


@pytest.mark.parametrize("short", ["", "7", "79991"])
def test_mask_of_something_too_short_to_be_a_phone_hides_it_all(short: str) -> None:
    assert mask(short) == "***"
