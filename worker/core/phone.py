"""Russian phone numbers: validation beyond the producer function's shape check, and masking."""

from __future__ import annotations

import re

import phonenumbers

__all__ = ["is_valid_russian", "mask", "normalise"]

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


def is_valid_russian(phone: str) -> bool:
    """Whether a normalised number (7XXXXXXXXXX) is an assigned Russian number.

    The producer function accepts any +7 number of the right length; +7 also covers
    Kazakhstan and ranges that are not assigned, and calling those costs money for nothing.
    """
    try:
        parsed = phonenumbers.parse("+" + phone)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.region_code_for_number(parsed) == "RU" and phonenumbers.is_valid_number(parsed)


def mask(phone: str) -> str:
    """7XXXXXXXXXX -> +7999*****67: enough to tell numbers apart in logs, not to call one."""
    if len(phone) < 6:
        return "***"
    return "+" + phone[:4] + "*" * (len(phone) - 6) + phone[-2:]
