"""Verification codes and the caller numbers that carry them."""

from __future__ import annotations

import random

__all__ = ["caller_ending_in", "random_digits"]

# A Moscow prefix, like the pools real flash-call providers ring from.
_CALLER_PREFIX = "7495"
_NUMBER_LENGTH = 11


def random_digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def caller_ending_in(rng: random.Random, code: str) -> str:
    """An 11-digit caller number `7495…` whose last digits are `code`."""
    filler = _NUMBER_LENGTH - len(_CALLER_PREFIX) - len(code)
    return _CALLER_PREFIX + random_digits(rng, filler) + code
