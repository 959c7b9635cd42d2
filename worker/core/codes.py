"""Verification codes: generated with the OS's CSPRNG, stored only as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["code_hash", "generate"]


def generate(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def code_hash(secret: bytes, verification_id: str, code: str) -> str:
    """HMAC-SHA256 of the code, bound to its verification: a 4-digit code hashed without a
    secret would be brute-forced from a Redis dump in a millisecond."""
    return hmac.new(secret, f"{verification_id}:{code}".encode(), hashlib.sha256).hexdigest()
