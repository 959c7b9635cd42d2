"""Process settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from worker.core.errors import ConfigurationError
from worker.redis.connections import RedisTarget
from worker.redis.replication import DEFAULT_WAIT_MS

__all__ = ["DEFAULT_REDIS_URL", "Settings"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_MIN_SECRET_BYTES = 16
#: A WAIT longer than this would outlast the store's socket timeout (10 s) in its retries,
#: and hold a pool connection for as long.
_MAX_REPLICA_WAIT_MS = 5000


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    """One server's URL or a redis+sentinel:// one (worker/redis/connections.py), checked on reading."""
    code_secret: bytes
    routing_path: Path
    redis_pool_size: int = 64
    timer_interval: float = 0.2
    """The shortest time between two passes of the timer loop (worker/process/timers.py),
    which otherwise sleeps until the next timer falls due, a second at most."""
    reload_interval: float = 2.0
    """How often the routing file is compared with the one in force."""
    state_interval: float = 1.0
    """How often the routing state (breakers, money, health) is read from Redis."""
    balance_interval: float = 60.0
    """How often one process of the cluster asks each provider for its balance."""
    callback_base_url: str | None = None
    """The public root of `flashcall callbacks`; providers that post statuses are given
    <root>/callbacks/<provider>/<token>. Without it, statuses are polled where providers
    allow it."""
    previous_code_secrets: tuple[bytes, ...] = ()
    """Secrets being rotated away from: checks still accept codes hashed under them, new
    codes are hashed under `code_secret` only."""
    replica_wait_ms: int = DEFAULT_WAIT_MS
    """How long a claim waits for a replica to hold it before its provider is called (while
    the primary has a replica; worker/redis/replication.py)."""

    @property
    def code_secrets(self) -> tuple[bytes, ...]:
        """Every secret a typed code is compared under, the current one first."""
        return (self.code_secret, *self.previous_code_secrets)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, require_secret: bool = True) -> Settings:
        env = os.environ if environ is None else environ
        secret = env.get("FLASHCALL_CODE_SECRET", "")
        if require_secret and len(secret.encode()) < _MIN_SECRET_BYTES:
            raise ConfigurationError(
                "FLASHCALL_CODE_SECRET must be set to a random string of at least "
                f"{_MIN_SECRET_BYTES} bytes (codes are stored as HMACs keyed with it); "
                "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
        RedisTarget.parse(redis_url)  # a mistyped URL stops the process here, saying what to write
        return cls(
            redis_url=redis_url,
            code_secret=secret.encode(),
            routing_path=Path(env.get("FLASHCALL_ROUTING", "routing.yaml")),
            redis_pool_size=_positive_int(env, "FLASHCALL_REDIS_POOL_SIZE", 64),
            timer_interval=_positive_int(env, "FLASHCALL_TIMER_INTERVAL_MS", 200) / 1000,
            reload_interval=_positive_int(env, "FLASHCALL_RELOAD_INTERVAL_MS", 2000) / 1000,
            state_interval=_positive_int(env, "FLASHCALL_STATE_INTERVAL_MS", 1000) / 1000,
            balance_interval=_positive_int(env, "FLASHCALL_BALANCE_INTERVAL_MS", 60000) / 1000,
            callback_base_url=_callback_base_url(env),
            previous_code_secrets=_previous_secrets(env, secret.encode()),
            replica_wait_ms=_positive_int(
                env, "FLASHCALL_REPLICA_WAIT_MS", DEFAULT_WAIT_MS, most=_MAX_REPLICA_WAIT_MS
            ),
        )


def _callback_base_url(env: Mapping[str, str]) -> str | None:
    """FLASHCALL_CALLBACK_BASE_URL: an http(s) root that providers can post to. Anything else
    would be handed to every provider call, and every status it should bring would be lost."""
    raw = env.get("FLASHCALL_CALLBACK_BASE_URL") or None
    if raw is None:
        return None
    try:
        url = urlsplit(raw)
        # `port` raises ValueError for one that is not a number from 0 to 65535.
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        valid = valid and not url.query and not url.fragment
    except ValueError:
        valid = False
    if not valid:
        # Without its value: a URL may carry a password.
        raise ConfigurationError(
            "FLASHCALL_CALLBACK_BASE_URL must be the public http(s) root of `flashcall callbacks`, "
            "such as https://callbacks.example.com (a scheme, a host, no query)"
        )
    return raw


def _previous_secrets(env: Mapping[str, str], current: bytes) -> tuple[bytes, ...]:
    """FLASHCALL_CODE_SECRET_PREVIOUS: comma-separated, each held to the rule of the current
    secret (a short one would make the codes hashed under it guessable from a Redis dump)."""
    raw = env.get("FLASHCALL_CODE_SECRET_PREVIOUS", "")
    previous: list[bytes] = []
    for position, entry in enumerate(raw.split(","), start=1):
        secret = entry.strip().encode()
        if not secret:
            continue
        if len(secret) < _MIN_SECRET_BYTES:
            # The position, never the value: settings errors end up in logs.
            raise ConfigurationError(
                f"FLASHCALL_CODE_SECRET_PREVIOUS: secret number {position} is shorter than "
                f"{_MIN_SECRET_BYTES} bytes; list the earlier values of FLASHCALL_CODE_SECRET, "
                "comma-separated, exactly as they were set"
            )
        # A repeat would only cost one more HMAC per check.
        if secret != current and secret not in previous:
            previous.append(secret)
    return tuple(previous)


def _positive_int(env: Mapping[str, str], name: str, default: int, *, most: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}")
    if most is not None and value > most:
        raise ConfigurationError(f"{name} must be at most {most}, not {raw!r}")
    return value
