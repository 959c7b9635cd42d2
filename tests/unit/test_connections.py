"""REDIS_URL: one server's URL or a redis+sentinel:// one, refused with what to write instead."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from worker.core.errors import ConfigurationError
from worker.process.settings import Settings
from worker.redis.connections import RedisTarget, async_client, sync_client

SECRET = "x" * 32


def test_a_sentinel_url_names_the_sentinels_the_service_the_database_and_the_credentials() -> None:
    target = RedisTarget.parse(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-3/flashcall/2"
        "?sentinel_password=watch"
    )
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379))
    assert (target.service, target.db) == ("flashcall", 2)
    assert (target.username, target.password, target.sentinel_password) == ("app", "s@cret", "watch")


def test_a_sentinel_url_without_a_database_uses_database_0_and_no_password() -> None:
    target = RedisTarget.parse("redis+sentinel://127.0.0.1:26379/flashcall")
    assert (target.db, target.username, target.password) == (0, None, None)


def test_a_password_alone_is_the_primarys_default_user() -> None:
    target = RedisTarget.parse("redis+sentinel://:pw@h:1/flashcall/0")
    assert (target.username, target.password) == (None, "pw")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379,h2:26379",  # no service
        "redis+sentinel://h1:26379/flashcall/zero",
        "redis+sentinel://h1:26379/flashcall/0/extra",
        "redis+sentinel://h1:port/flashcall",
        "redis+sentinel://h1:26379,/flashcall",
        "redis+sentinel://h1:26379/flashcall?socket_timeout=1",
        "sentinel://h1:26379/flashcall",
        "localhost:6379",
        "redis://localhost:6379/notadb?db=x",
    ],
)
def test_a_bad_url_is_a_configuration_error_that_shows_both_forms(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RedisTarget.parse(url)
    assert "redis://" in str(raised.value)
    assert "redis+sentinel://" in str(raised.value)


def test_the_worker_refuses_to_start_with_a_bad_redis_url() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://h1:26379", "FLASHCALL_CODE_SECRET": SECRET})


def test_described_targets_carry_no_password() -> None:
    sentinel = RedisTarget.parse("redis+sentinel://app:secret@h1,h2:26380/flashcall/1?sentinel_password=p")
    assert sentinel.describe() == "redis+sentinel://h1:26379,h2:26380/flashcall/1"
    assert "secret" not in RedisTarget.parse("redis://:secret@h:6380/3").describe()


def test_a_server_url_gets_plain_clients_on_a_blocking_pool() -> None:
    assert not isinstance(
        sync_client("redis://h:6380/0").connection_pool, redis.sentinel.SentinelConnectionPool
    )
    pool = async_client("redis://h:6380/0", pool_size=7, timeout=3).connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert pool.max_connections == 7


def test_a_sentinel_url_gets_clients_of_the_services_primary_on_a_blocking_pool() -> None:
    client = sync_client("redis+sentinel://h1:26379/flashcall/3", decode_responses=True)
    assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert client.connection_pool.is_master
    assert client.connection_pool.connection_kwargs["db"] == 3
    pool = async_client("redis+sentinel://h1:26379/flashcall/3", pool_size=7, timeout=3).connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout, pool.service_name) == (7, 3, "flashcall")
