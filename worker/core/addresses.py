"""Client IP addresses as flashcall_start accepts them in `client_ip`.

The same rule as the library's valid_ip (worker/redis/flashcall.lua), tested against the
same table (tests/cases/ips.json): a backend can tell before it sends a start whether the
address it holds would make flashcall_start refuse the whole request.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_client_ip"]


def is_client_ip(text: object) -> bool:
    """An IPv4 dotted quad without leading zeros, or an IPv6 address as RFC 4291 writes it
    (an IPv4 tail included), without a zone id: ipaddress's rule, less the zone id it takes."""
    if not isinstance(text, str) or "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
