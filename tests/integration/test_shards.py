"""Two shards, two real redis-servers with the flashcall library: a number's every request
goes to one of them, so its per-number limit and start idempotency hold as on one primary."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from flashcall_dev.stack import redis_server
from worker.client import Shards, shard_of
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.redis.library import install

pytestmark = pytest.mark.integration

NUMBER = "+79991234567"


@pytest.fixture
def shards() -> Iterator[Shards]:
    with ExitStack() as servers:
        urls = [
            servers.enter_context(
                redis_server(Path(tempfile.mkdtemp(prefix="flashcall-shard-")), name=f"shard{n}")
            )
            for n in range(2)
        ]
        for url in urls:
            client = redis.Redis.from_url(url, decode_responses=True)
            install(client)
            # One start per number per two minutes, as routing.yaml ships.
            config = PublishedConfig(policies=("default",), per_phone=((1, 120_000),))
            functions.publish_config(config).run(client)
            client.close()
        sharded = Shards.from_urls(urls)
        yield sharded
        sharded.close()


def test_a_second_start_of_a_number_meets_its_limit_on_its_shard(shards: Shards) -> None:
    shards.for_phone(NUMBER).start("first", NUMBER)

    second = shards.for_phone("8 (999) 123-45-67").start("second", "8 (999) 123-45-67")

    assert (second["status"], second["reason"]) == ("failed", "rate_limited")


def test_a_start_sent_again_answers_the_same_verification(shards: Shards) -> None:
    first = shards.for_phone(NUMBER).start("again", NUMBER)

    repeated = shards.for_phone(NUMBER).start("again", NUMBER)

    assert (repeated["status"], repeated["created"]) == (first["status"], False)


def test_the_other_shard_never_hears_of_the_number(shards: Shards) -> None:
    shards.for_phone(NUMBER).start("only-here", NUMBER)
    other = shards[1 - shard_of(NUMBER, 2)]

    assert other.status("only-here")["status"] == "not_found"
