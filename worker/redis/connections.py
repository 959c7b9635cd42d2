"""Every Redis connection of the product, made from one setting: REDIS_URL.

REDIS_URL names either one server (`redis://`, `rediss://`, `unix://`, as redis-py reads
them) or a primary found through Redis Sentinel:

    redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<service>[/<db>]
        [?sentinel_password=...&sentinel_username=...]

The user and password are the primary's; the sentinels get their own in the query (most
deployments leave sentinels without a password). Workers, the callback receiver, the
command line and the Python producer all connect through the functions here, so all of
them follow a failover the same way:

- a connection is made to whatever address the sentinels give for the service, asked
  again on every (re)connection;
- a connection lost (the old primary died, or a sentinel demoting it closed its clients)
  or answered READONLY (it was demoted under us) is dropped by redis-py and the command
  retried on the next connection, that is on the new primary; what is still failing
  after redis-py's retries reaches the caller as a ConnectionError, which the worker's
  Store turns into StoreUnavailable (its messages are retried);
- a manual failover (`SENTINEL FAILOVER`) leaves the old primary up, and accepting
  writes, until a sentinel converts it into a replica, about 8 s later: writes made there
  meanwhile are lost at the conversion. So each process also asks the sentinels where
  the primary is twice a second (one thread, _PrimaryWatch), and a connection taken from
  its pool reconnects when the primary moved.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from worker.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "PRIMARY_CHECK_INTERVAL",
    "SENTINEL_SCHEME",
    "RedisTarget",
    "async_client",
    "sync_client",
]

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379

#: Seconds between two questions of a process to the sentinels about where the primary is.
PRIMARY_CHECK_INTERVAL = 0.5

#: A sentinel that does not answer within this is skipped for the next one.
_SENTINEL_TIMEOUT = 1.0

_PLAIN_SCHEMES = ("redis", "rediss", "unix")
_SENTINEL_QUERY = ("sentinel_password", "sentinel_username")

_SYNTAX = (
    "write redis://[[user]:password@]host:6379/<db> for one server, or "
    f"{SENTINEL_SCHEME}://[[user]:password@]host1:26379,host2:26379,host3:26379/<service>/<db> "
    "to find the primary through Redis Sentinel"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where REDIS_URL says Redis is: one server's URL, or sentinels and a service name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def via_sentinel(self) -> bool:
        return bool(self.sentinels)

    @classmethod
    def parse(cls, url: str, *, setting: str = "REDIS_URL") -> RedisTarget:
        """Read a URL, or raise ConfigurationError saying what to write instead."""
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme in _PLAIN_SCHEMES:
            try:
                redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
            except ValueError as error:
                raise ConfigurationError(f"{setting} is not a valid Redis URL ({error}): {_SYNTAX}") from None
            return cls(url=url)
        if scheme != SENTINEL_SCHEME:
            raise ConfigurationError(f"{setting} must name a Redis server or sentinels: {_SYNTAX}")
        return cls._parse_sentinel(url, setting)

    @classmethod
    def _parse_sentinel(cls, url: str, setting: str) -> RedisTarget:
        # urlsplit reads one host only: take the comma-separated list out of the netloc.
        parts = urlsplit(url)
        credentials, _, hosts = parts.netloc.rpartition("@")
        sentinels = tuple(_host_port(item, setting) for item in hosts.split(","))
        path = [unquote(piece) for piece in parts.path.split("/")[1:]]
        if path and path[-1] == "":
            path.pop()
        if not path or not path[0] or len(path) > 2:
            raise ConfigurationError(f"{setting} must name the Sentinel service after the hosts: {_SYNTAX}")
        db = 0
        if len(path) == 2:
            if not path[1].isdigit():
                raise ConfigurationError(
                    f"{setting}: the database must be a number, not {path[1]!r}: {_SYNTAX}"
                )
            db = int(path[1])
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_SENTINEL_QUERY))
        if unknown:
            raise ConfigurationError(
                f"{setting}: unknown option {', '.join(unknown)}; a Sentinel URL takes only "
                + " and ".join(_SENTINEL_QUERY)
                + f": {_SYNTAX}"
            )
        username, _, password = credentials.partition(":")
        return cls(
            url=url,
            sentinels=sentinels,
            service=path[0],
            db=db,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=query.get("sentinel_username", [""])[0] or None,
            sentinel_password=query.get("sentinel_password", [""])[0] or None,
        )

    def describe(self) -> str:
        """The target without its credentials, for messages and logs."""
        if self.via_sentinel:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def _primary_options(self) -> dict[str, Any]:
        return {"db": self.db, "username": self.username, "password": self.password}

    def _sentinel_options(self) -> dict[str, Any]:
        return {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
            "socket_timeout": _SENTINEL_TIMEOUT,
            "socket_connect_timeout": _SENTINEL_TIMEOUT,
        }


def _host_port(item: str, setting: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = item.strip(), str(DEFAULT_SENTINEL_PORT)
    host = host.strip("[]")  # an IPv6 address is written in brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"{setting}: {item!r} is not a sentinel's host:port: {_SYNTAX}")
    return host, int(port)


def _target(target: RedisTarget | str) -> RedisTarget:
    return target if isinstance(target, RedisTarget) else RedisTarget.parse(target)


def sync_client(target: RedisTarget | str, **options: Any) -> redis.Redis:
    """A thread-safe client of the primary; `options` are redis.Redis's (decode_responses,
    socket_timeout, ...). Dramatiq's broker, breakers, checks, the CLI and the producer."""
    resolved = _target(target)
    if not resolved.via_sentinel:
        return redis.Redis.from_url(resolved.url, **options)
    sentinel = _SyncSentinel(
        list(resolved.sentinels), sentinel_kwargs=resolved._sentinel_options(), **resolved._primary_options()
    )
    sentinel.primary_watch = _watch_for(resolved)
    client: redis.Redis = sentinel.master_for(
        resolved.service, connection_pool_class=_SyncPrimaryPool, **options
    )
    return client


def async_client(
    target: RedisTarget | str, *, pool_size: int, timeout: float, **options: Any
) -> redis.asyncio.Redis:
    """An asyncio client of the primary on a blocking pool of `pool_size` connections:
    hundreds of coroutines wait up to `timeout` seconds for a connection instead of
    failing with "Too many connections" (redis.asyncio's default pool)."""
    resolved = _target(target)
    if not resolved.via_sentinel:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            resolved.url, max_connections=pool_size, timeout=timeout, **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    sentinel = _AsyncSentinel(
        list(resolved.sentinels), sentinel_kwargs=resolved._sentinel_options(), **resolved._primary_options()
    )
    sentinel.primary_watch = _watch_for(resolved)
    client: redis.asyncio.Redis = sentinel.master_for(
        resolved.service,
        connection_pool_class=_AsyncPrimaryPool,
        max_connections=pool_size,
        timeout=timeout,
        **options,
    )
    return client


class _PrimaryWatch:
    """Where the sentinels last said the primary is, for every pool of this process.

    A daemon thread asks them every PRIMARY_CHECK_INTERVAL; a connection taken from its
    pool compares its address with the answer, without a round trip of its own. One
    answer for the whole process, so that its pools move together: a worker must not
    fetch a message from the new primary and then look for its verification on the old
    one. A sentinel that cannot be asked leaves the last answer in force (the primary may
    well be fine)."""

    def __init__(self, target: RedisTarget) -> None:
        self._target = target
        self._address: tuple[str, int] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def primary(self) -> tuple[str, int] | None:
        if self._pid != os.getpid():
            self._start()
        return self._address

    def _start(self) -> None:
        # Threads do not survive a fork: each process (each Dramatiq worker) runs its own.
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid, self._address = os.getpid(), None
            threading.Thread(target=self._watch, name="flashcall-primary-watch", daemon=True).start()

    def _watch(self) -> None:
        sentinel = redis.sentinel.Sentinel(
            list(self._target.sentinels), sentinel_kwargs=self._target._sentinel_options()
        )
        while True:
            try:
                host, port = sentinel.discover_master(self._target.service)
                self._address = (str(host), int(port))
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(PRIMARY_CHECK_INTERVAL)


_watches: dict[RedisTarget, _PrimaryWatch] = {}
_watches_lock = threading.Lock()


def _watch_for(target: RedisTarget) -> _PrimaryWatch:
    with _watches_lock:
        return _watches.setdefault(target, _PrimaryWatch(target))


def _moved(pool: Any, host: str | None, port: int | None) -> bool:
    """Whether the sentinels name another primary than the one at host:port."""
    watch: _PrimaryWatch | None = getattr(pool.sentinel_manager, "primary_watch", None)
    primary = watch.primary() if watch is not None else None
    return primary is not None and primary != (host, port)


class _SyncSentinel(redis.sentinel.Sentinel):
    primary_watch: _PrimaryWatch | None = None


class _AsyncSentinel(redis.asyncio.sentinel.Sentinel):
    primary_watch: _PrimaryWatch | None = None


class _SyncPrimaryConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the primary that moves as soon as the sentinels name another."""

    connection_pool: Any

    def connect(self) -> None:
        if self.is_connected and _moved(self.connection_pool, self.host, self.port):
            # Reconnecting asks the sentinels again, and drops the pool's idle connections.
            self.disconnect()  # type: ignore[no-untyped-call]
        super().connect()  # type: ignore[no-untyped-call]


class _SyncPrimaryPool(redis.sentinel.SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: redis.sentinel.Sentinel, **kwargs: Any) -> None:
        kwargs.setdefault("connection_class", _SyncPrimaryConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]


class _AsyncPrimaryConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio twin of _SyncPrimaryConnection."""

    connection_pool: Any

    async def connect(self) -> None:
        if self.is_connected and _moved(self.connection_pool, self.host, self.port):
            await self.disconnect()
        await super().connect()  # type: ignore[no-untyped-call]


class _AsyncPrimaryPool(redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Sentinel's pool, blocking like the one a single server gets: SentinelConnectionPool
    passes its remaining arguments (max_connections, timeout) on to BlockingConnectionPool,
    whose get_connection waits for a free connection."""

    def __init__(
        self, service_name: str, sentinel_manager: redis.asyncio.sentinel.Sentinel, **kwargs: Any
    ) -> None:
        kwargs.setdefault("connection_class", _AsyncPrimaryConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
