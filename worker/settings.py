"""Process settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigurationError

__all__ = ["Settings"]

_MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    code_secret: bytes
    routing_path: Path
    redis_pool_size: int = 64
    timer_interval: float = 0.2
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
        return cls(
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            code_secret=secret.encode(),
            routing_path=Path(env.get("FLASHCALL_ROUTING", "routing.yaml")),
            redis_pool_size=_positive_int(env, "FLASHCALL_REDIS_POOL_SIZE", 64),
            timer_interval=_positive_int(env, "FLASHCALL_TIMER_INTERVAL_MS", 200) / 1000,
            reload_interval=_positive_int(env, "FLASHCALL_RELOAD_INTERVAL_MS", 2000) / 1000,
            state_interval=_positive_int(env, "FLASHCALL_STATE_INTERVAL_MS", 1000) / 1000,
            balance_interval=_positive_int(env, "FLASHCALL_BALANCE_INTERVAL_MS", 60000) / 1000,
            callback_base_url=env.get("FLASHCALL_CALLBACK_BASE_URL") or None,
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}")
    return value
