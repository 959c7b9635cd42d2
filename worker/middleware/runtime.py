"""Builds the process's Runtime at worker boot and tears it down at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread

from worker.redis import install
from worker.runtime import Runtime
from worker.settings import Settings

__all__ = ["RuntimeBoot"]

_BOOT_TIMEOUT = 30.0


class RuntimeBoot(dramatiq.Middleware):
    """Must come after Dramatiq's AsyncIO middleware, whose event loop it builds on."""

    def __init__(self, *, client: redis.Redis) -> None:
        self._client = client
        self._runtime: Runtime | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        settings = Settings.from_env()
        # Before any consumer starts: the first message may already call a function.
        install(self._client)
        self._runtime = asyncio.run_coroutine_threadsafe(Runtime.start(settings), _loop()).result(
            _BOOT_TIMEOUT
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._runtime is not None:
            asyncio.run_coroutine_threadsafe(self._runtime.stop(), _loop()).result(_BOOT_TIMEOUT)
            self._runtime = None


def _loop() -> asyncio.AbstractEventLoop:
    thread = get_event_loop_thread()
    if thread is None:
        raise RuntimeError("RuntimeBoot needs Dramatiq's AsyncIO middleware before it")
    return thread.loop
