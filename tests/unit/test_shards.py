"""Choosing a Redis shard by phone number: stable, evenly spread, and moving few numbers
when a shard is added. Producer objects are built unconnected (redis-py connects lazily)."""

from __future__ import annotations

from collections import Counter

import pytest

from worker.client import Producer, Shards, jump_hash, shard_key, shard_of
from worker.core.errors import ConfigurationError

NUMBERS = [f"7999{n:07d}" for n in range(20_000)]


@pytest.mark.parametrize(
    ("key", "buckets", "bucket"),
    [(0, 60, 0), (1, 60, 55), (2, 60, 46), (42, 57, 43), (256, 1024, 520), (0xDEAD10CC, 666, 361)],
)
def test_jump_hash_agrees_with_the_published_implementations(key: int, buckets: int, bucket: int) -> None:
    assert jump_hash(key, buckets) == bucket


def test_the_shard_key_is_the_first_eight_bytes_of_the_sha256_of_the_stored_number() -> None:
    assert shard_key("79991234567") == 0x3EA3B0328A0F8F80


@pytest.mark.parametrize("written", ["+7 (999) 123-45-67", "89991234567", "79991234567", "+79991234567"])
def test_every_way_of_writing_a_number_picks_the_same_shard(written: str) -> None:
    assert shard_of(written, 8) == shard_of("79991234567", 8)


def test_numbers_spread_evenly_over_the_shards() -> None:
    counts = Counter(shard_of(number, 4) for number in NUMBERS)
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(count - 5000) < 300 for count in counts.values())


def test_adding_a_fifth_shard_moves_about_a_fifth_of_the_numbers_and_only_onto_it() -> None:
    moved = [number for number in NUMBERS if shard_of(number, 4) != shard_of(number, 5)]
    assert abs(len(moved) / len(NUMBERS) - 0.2) < 0.02
    assert {shard_of(number, 5) for number in moved} == {4}


def test_a_number_that_is_not_russian_is_refused_before_any_shard_is_asked() -> None:
    with pytest.raises(ValueError, match="not a Russian number"):
        shard_of("+1 212 555 0100", 2)


def test_no_shard_count_below_one() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        jump_hash(1, 0)


def test_shards_hand_out_the_producer_of_the_numbers_shard() -> None:
    producers = [Producer.from_url(f"redis://127.0.0.1:1/{n}") for n in range(3)]
    shards = Shards(producers)
    assert shards.for_phone("79991234567") is producers[shard_of("79991234567", 3)]


def test_shards_without_any_url_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="one Redis URL per shard"):
        Shards.from_urls([])
