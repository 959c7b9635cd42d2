"""Russian phone numbers: validation beyond the producer function's shape check, and masking."""

from __future__ import annotations

import phonenumbers

__all__ = ["is_valid_russian", "mask"]


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
