"""Builds the process's Runtime at worker boot and tears it down at shutdown."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, NoReturn

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy

from worker.core import keys
from worker.core.errors import ConfigurationError, FlashcallError
from worker.logs.structured import get_logger
from worker.process.runtime import Runtime
from worker.process.settings import Settings
from worker.redis.library import install

__all__ = ["EXIT_BOOT_FAILED", "EXIT_CONFIGURATION", "RuntimeBoot"]

log = get_logger(__name__)

_BOOT_TIMEOUT = 30.0
#: Closing providers and Redis pools takes milliseconds; more only when something blocks the loop.
_STOP_TIMEOUT = 3.0

EXIT_CONFIGURATION = 2
"""A process's exit status when its settings or routing file are wrong: `flashcall`'s own."""
EXIT_BOOT_FAILED = 3
"""When its boot failed otherwise (Redis unreachable): Dramatiq's for a broker it cannot reach."""


class RuntimeBoot(dramatiq.Middleware):
    """Must come after Dramatiq's AsyncIO middleware, whose event loop it builds on."""

    def __init__(self, *, client: redis.Redis) -> None:
        self._client = client
        self._runtime: Runtime | None = None
        self._in_progress: set[str] = set()
        """Ids of the messages worker threads are processing (set.add and discard are atomic)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            settings = Settings.from_env()
            # Before any consumer starts: the first message may already call a function.
            install(self._client)
            # Set by ProcessRoles, or Dramatiq's --queues: None for every queue.
            queues = worker.consumer_whitelist
            routes = not queues or keys.VERIFY_QUEUE in queues
            self._runtime = asyncio.run_coroutine_threadsafe(
                Runtime.start(settings, routes=routes), _loop()
            ).result(_BOOT_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - whatever it is, the process must not consume
            _end_process(error)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # What the process holds for its whole life (modules, the runtime, its threads) goes
        # where the collector no longer looks: every full collection traversed it all, a
        # 40-120 ms pause of every verification in the process, several a minute under load.
        gc.collect()
        gc.freeze()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._in_progress.add(message.message_id)

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        self._in_progress.discard(message.message_id)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._in_progress.discard(message.message_id)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # After the worker threads, not before: closing the providers under a call in flight
        # failed it as "disconnected" and the verification went on to its next step at once,
        # a second call to someone the first may have reached. Before the event loop stops
        # (Dramatiq runs these hooks in reverse order: AsyncIO's comes after this one).
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        in_flight = len(self._in_progress)
        if in_flight:
            # Past --shutdown-timeout: left as they are, unacknowledged, as a crash leaves
            # them; the broker redelivers them and each attempt's lease stops a second call.
            log.warning(
                "messages still in progress at the end of the shutdown: the broker redelivers them",
                in_progress=in_flight,
            )
            return
        try:
            asyncio.run_coroutine_threadsafe(runtime.stop(), _loop()).result(_STOP_TIMEOUT)
        except TimeoutError:
            log.warning(
                "the runtime did not close in time: the process exits without it", waited_s=_STOP_TIMEOUT
            )


def _end_process(error: Exception) -> NoReturn:
    """End this process before its consumers exist.

    Dramatiq logs and ignores any Exception a middleware raises at boot, then starts the
    consumers anyway: every message would reach a process without a runtime and be
    dead-lettered. SystemExit is not an Exception, so it leaves Worker.start() before the
    consumers are made; Dramatiq's worker_process still tells the main process it booted
    (in a `finally`), and multiprocessing exits with its code, without a traceback. The main
    process then stops the other processes and exits with that code. os._exit would skip
    that `finally`, and the main process would wait out its worker fork timeout (30 s).
    """
    unexpected = not isinstance(error, FlashcallError | redis.RedisError | TimeoutError)
    code = EXIT_CONFIGURATION if isinstance(error, ConfigurationError) else EXIT_BOOT_FAILED
    log.critical(
        "worker process cannot start; it exits before taking any message",
        error=str(error) or type(error).__name__,
        exit_status=code,
        exc_info=unexpected,
    )
    # Dramatiq's event loop thread is no daemon: the exiting process would wait for it.
    thread = get_event_loop_thread()
    if thread is not None:
        thread.stop()  # type: ignore[no-untyped-call]
    raise SystemExit(code)


def _loop() -> asyncio.AbstractEventLoop:
    thread = get_event_loop_thread()
    if thread is None:
        raise RuntimeError("RuntimeBoot needs Dramatiq's AsyncIO middleware before it")
    return thread.loop
