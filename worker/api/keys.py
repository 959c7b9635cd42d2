"""The HTTP API's keys: who may call it, and the name each request is counted under.

A key is given in `FLASHCALL_API_KEYS` (`name:key,name:key`) or, one per line, in the file
`FLASHCALL_API_KEYS_FILE` names (`#` starts a comment). The file holds keys only hashed,
`name:sha256:<64 hex digits>` (what `flashcall api-key NAME` prints), so that a copy of it
lets nobody in; the variable takes either form. Only the hashes are kept in memory.

A key is at least 32 random characters (`flashcall api-key` makes 43), so a single SHA-256
is as hard to reverse as the key is to guess: a slow password hash would cost every
request its time and buy nothing. Several keys may share a name (a key being rotated and its
successor); one key under two names is refused, since it could not say whose it is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.core.errors import ConfigurationError

__all__ = ["MIN_KEY_LENGTH", "ApiKeys", "hashed_entry", "new_key"]

MIN_KEY_LENGTH = 32
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9_\-.~+/=]+")
_HASHED = re.compile(r"sha256:([0-9a-f]{64})")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A key of 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hashed_entry(name: str, key: str) -> str:
    """The line of FLASHCALL_API_KEYS_FILE for this key."""
    return f"{name}:sha256:{_digest(key).hex()}"


@dataclass(frozen=True, slots=True)
class ApiKeys:
    by_digest: Mapping[bytes, str]
    """SHA-256 of each key, to the name it goes by."""

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.by_digest.values())

    def name_of(self, key: str) -> str | None:
        """The name of this key, or None for a key nobody was given. The lookup is by the
        key's hash, so its time tells nothing of how much of a key was right."""
        return self.by_digest.get(_digest(key))

    def name_of_header(self, authorization: str | None) -> str | None:
        """The name of the key in an `Authorization: Bearer <key>` header."""
        if authorization is None:
            return None
        scheme, _, key = authorization.partition(" ")
        if not hmac.compare_digest(scheme.lower(), "bearer") or not key:
            return None
        return self.name_of(key.strip())

    @classmethod
    def parse(cls, entries: list[tuple[str, str, bool]]) -> ApiKeys:
        """`entries` are (where, `name:key` or `name:sha256:hex`, whether it must be hashed);
        `where` says in errors which entry is wrong, never its key."""
        by_digest: dict[bytes, str] = {}
        for where, entry, hashed_only in entries:
            name, separator, secret = entry.partition(":")
            if not separator or not _NAME.fullmatch(name):
                raise ConfigurationError(
                    f"{where}: expected NAME:KEY, the name 1 to 64 letters, digits, _ and -"
                )
            hashed = _HASHED.fullmatch(secret)
            if hashed:
                digest = bytes.fromhex(hashed.group(1))
            elif hashed_only:
                raise ConfigurationError(
                    f"{where}: the file holds keys only hashed, NAME:sha256:<64 hex digits>; "
                    "`flashcall api-key NAME` prints a new key and its line"
                )
            elif len(secret) < MIN_KEY_LENGTH or not _KEY.fullmatch(secret):
                raise ConfigurationError(
                    f"{where}: the key of {name!r} must be at least {MIN_KEY_LENGTH} characters "
                    "without spaces, commas or colons; `flashcall api-key NAME` makes one"
                )
            else:
                digest = _digest(secret)
            if by_digest.get(digest, name) != name:
                raise ConfigurationError(
                    f"{where}: this key is given to both {by_digest[digest]!r} and {name!r}"
                )
            by_digest[digest] = name
        return cls(by_digest)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys:
        env = os.environ if environ is None else environ
        entries = [
            (f"FLASHCALL_API_KEYS entry {position}", entry.strip(), False)
            for position, entry in enumerate(env.get("FLASHCALL_API_KEYS", "").split(","), start=1)
            if entry.strip()
        ]
        if path := env.get("FLASHCALL_API_KEYS_FILE"):
            entries += _file_entries(Path(path))
        if not entries:
            raise ConfigurationError(
                "the API has no keys: set FLASHCALL_API_KEYS (name:key,...) or FLASHCALL_API_KEYS_FILE; "
                "`flashcall api-key NAME` makes one"
            )
        return cls.parse(entries)


def _file_entries(path: Path) -> list[tuple[str, str, bool]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"FLASHCALL_API_KEYS_FILE {path}: cannot be read ({error})") from None
    return [
        (f"{path} line {number}", line.strip(), True)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
