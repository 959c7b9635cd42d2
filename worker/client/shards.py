"""Which Redis primary owns a phone number, once one primary is not enough.

Each shard is a complete deployment of its own (a Redis primary under Sentinel, its
workers, its callback receiver); nothing of one verification ever touches two shards.
Producers pick the shard from the phone number alone, so that every start, check,
status and cancel of a number lands on the same primary: its per-number limits and the
idempotency of a start by id then hold exactly as on one primary.

The choice, for producers in any language (docs/scaling.md has test vectors):

    key   = the first 8 bytes, big-endian, of SHA-256 of the number as flashcall_start
            stores it ("79991234567": 7 and ten digits)
    shard = jump consistent hash (Lamping and Veach, 2014) of key into the shard count

Jump hashing moves only 1/(n+1) of the numbers when an n-th shard is added (a modulo
would move nearly all), and needs no table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from worker.client.producer import Producer
from worker.core.errors import ConfigurationError
from worker.core.phone import normalise

__all__ = ["Shards", "jump_hash", "shard_key", "shard_of"]

_MASK64 = (1 << 64) - 1
_MULTIPLIER = 2862933555777941757


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of a 64-bit key into `buckets` buckets."""
    if buckets < 1:
        raise ValueError(f"the number of shards must be 1 or more, not {buckets}")
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * _MULTIPLIER + 1) & _MASK64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_key(phone: str) -> int:
    """The 64-bit key of a number, whatever way it is written (+7 (999) 123-45-67, 8999...)."""
    digest = hashlib.sha256(normalise(phone).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(phone: str, shards: int) -> int:
    """The index, from 0, of the shard that owns the number."""
    return jump_hash(shard_key(phone), shards)


class Shards:
    """One Producer per shard, in the order operators list them; `for_phone` is the one to use.

    The order is part of the mapping: list the shards in the same order everywhere, and add
    a new shard at the end (it then takes 1/n of the numbers, and only from the others)."""

    def __init__(self, producers: Sequence[Producer]) -> None:
        if not producers:
            raise ConfigurationError("no shards given: name one Redis URL per shard")
        self._producers = list(producers)

    @classmethod
    def from_urls(cls, urls: Sequence[str]) -> Shards:
        """One REDIS_URL per shard (redis+sentinel:// ones included)."""
        return cls([Producer.from_url(url) for url in urls])

    def __len__(self) -> int:
        return len(self._producers)

    def __getitem__(self, index: int) -> Producer:
        """The producer of shard `index`, for work that goes to every shard in turn."""
        return self._producers[index]

    def for_phone(self, phone: str) -> Producer:
        """The producer of the number's shard: use it for every request about the number.
        A number that is not Russian raises ValueError, as flashcall_start would refuse it."""
        return self._producers[shard_of(phone, len(self._producers))]

    def close(self) -> None:
        for producer in self._producers:
            producer.close()
