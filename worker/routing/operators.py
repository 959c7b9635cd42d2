"""Which mobile operator's range a number is in: what conversion is learned per.

routing.yaml's `operators` name ranges by prefix and win; other numbers go by the carrier
their range was allocated to, from phonenumbers' carrier data (its +7 part, kept in
worker/routing/carriers.py), whose Russian table misses most of MTS's DEF codes: those are
filled in here. A number ported to another operator keeps its range's operator: the
estimate is for the range, which is what can be routed on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import phonenumbers

from worker.core.phone import Parsed, parse
from worker.routing import carriers

__all__ = ["carrier_name", "operator_of", "prefix_table"]

_CARRIERS = {"mts": "mts", "megafon": "megafon", "beeline": "beeline", "t2": "t2", "tele2": "t2"}
#: MTS's DEF codes, absent from phonenumbers' data for Russia.
_MTS_DEF = frozenset({*(f"91{d}" for d in range(10)), *(f"98{d}" for d in range(10))})


def operator_of(phone: str, named: Mapping[str, tuple[str, ...]]) -> str:
    """The operator range of a normalised number (7XXXXXXXXXX): the name of the longest
    matching prefix in `named`, else mts, megafon, beeline, t2 or other."""
    best, length = "", -1
    for name, prefixes in named.items():
        for prefix in prefixes:
            if len(prefix) > length and phone.startswith(prefix):
                best, length = name, len(prefix)
    return best or _by_carrier(phone)


# A verification's later attempts come within minutes, thousands of other numbers later
# at a busy worker's pace; every entry holds a little memory for the process's life.
@functools.lru_cache(maxsize=4096)
def _by_carrier(phone: str) -> str:
    parsed = parse(phone)
    if parsed is None:
        return "other"
    name = carrier_name(parsed).strip().lower()
    if not name and phone[1:4] in _MTS_DEF:
        return "mts"
    return _CARRIERS.get(name, "other")


#: The number types phonenumbers gives a carrier for (its carrier._is_mobile).
_MOBILE = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PAGER,
    }
)


def carrier_name(parsed: Parsed) -> str:
    """phonenumbers.carrier.name_for_number(number, "en") for a +7 number, from the +7 part
    of its table (worker/routing/carriers.py): the longest prefix of a mobile number's."""
    if parsed.kind not in _MOBILE:
        return ""
    digits = phonenumbers.format_number(parsed.number, phonenumbers.PhoneNumberFormat.E164)[1:]
    for length in range(carriers.LONGEST_PREFIX, 0, -1):
        name = carriers.RANGES.get(digits[:length])
        if name is not None:
            return name
    return ""


def prefix_table(named: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """operator_of as prefixes of 7XXXXXXXXXX, for flashcall_start (which has no carrier
    data) to place a number by the longest prefix of it here: every carrier prefix, MTS's
    DEF codes where no carrier prefix covers them, and `named` over both."""
    table = {prefix: _CARRIERS.get(name.strip().lower(), "other") for prefix, name in carriers.RANGES.items()}
    for code in _MTS_DEF:
        prefix = "7" + code
        if not any(prefix[:length] in carriers.RANGES for length in range(1, len(prefix) + 1)):
            table[prefix] = "mts"
    ranges = [(prefix, name) for name, prefixes in named.items() for prefix in prefixes]
    for prefix, name in sorted(ranges, key=lambda item: len(item[0])):
        # Longer named prefixes come later and take what they cover from shorter ones.
        for covered in [key for key in table if key.startswith(prefix)]:
            table[covered] = name
        table[prefix] = name
    return table
