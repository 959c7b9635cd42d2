"""Russian phone numbers: validation beyond the producer function's shape check, and masking."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers

__all__ = ["Parsed", "is_valid_russian", "mask", "normalise", "parse"]

# The library's rule, character for character (tests/cases/phones.json holds the cases both
# pass): only the ASCII space, '-', '(' and ')' are dropped, and only ASCII digits count, where
# \s and \d would also take Unicode spaces and full-width digits that the library refuses.
_FORMATTING = re.compile("[ ()-]")
_RUSSIAN = re.compile(r"(?:\+7|7|8)([0-9]{10})")


def normalise(raw: str) -> str:
    """+7 (999) 123-45-67, 79991234567, 89991234567 -> 79991234567, as flashcall_start does."""
    found = _RUSSIAN.fullmatch(_FORMATTING.sub("", raw))
    if found is None:
        raise ValueError(f"{raw!r} is not a Russian number: +7XXXXXXXXXX, 7XXXXXXXXXX or 8XXXXXXXXXX")
    return "7" + found.group(1)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A number as phonenumbers reads it."""

    number: phonenumbers.PhoneNumber
    region: str | None
    kind: int
    """Its phonenumbers.PhoneNumberType: UNKNOWN for a number of no assigned range."""


@functools.lru_cache(maxsize=256)
def parse(phone: str) -> Parsed | None:
    """A normalised number (7XXXXXXXXXX) as phonenumbers reads it; None when it cannot.

    Routing asks about a number twice as it chooses its first attempt (is it Russian, which
    operator's range is it in) and phonenumbers' answers are the dearest part of that
    choice: the last numbers' readings are kept. Never change the number it answers."""
    try:
        number = phonenumbers.parse("+" + phone)
    except phonenumbers.NumberParseException:
        return None
    return Parsed(number, phonenumbers.region_code_for_number(number), phonenumbers.number_type(number))


def is_valid_russian(phone: str) -> bool:
    """Whether a normalised number (7XXXXXXXXXX) is an assigned Russian number.

    The producer function accepts any +7 number of the right length; +7 also covers
    Kazakhstan and ranges that are not assigned, and calling those costs money for nothing.
    """
    parsed = parse(phone)
    if parsed is None or parsed.region != "RU":
        return False
    # phonenumbers.is_valid_number, for a number of RU: a type other than UNKNOWN.
    return parsed.kind != phonenumbers.PhoneNumberType.UNKNOWN


def mask(phone: str) -> str:
    """7XXXXXXXXXX -> +7999*****67: enough to tell numbers apart in logs, not to call one."""
    if len(phone) < 6:
        return "***"
    return "+" + phone[:4] + "*" * (len(phone) - 6) + phone[-2:]
