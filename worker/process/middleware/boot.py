"""Builds the process's Runtime at worker boot and tears it down at shutdown.

Start order does not matter: a process that finds Redis away at boot (not started yet,
restarting, loading its data, failing over) keeps trying, a few seconds apart, and boots
once Redis answers, installing the library then. Until it has booted its consumers fetch
nothing, so no message meets a process without a runtime (it would be dead-lettered, or
spend its retries); its heartbeat keeps it alive for `flashcall health`, and a marker
beside it keeps `flashcall health --ready` saying it waits for Redis. Anything else that
stops a boot (settings, the routing file, an ACL that refuses a command) does not pass by
waiting: the process exits, before its consumers take anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, NoReturn

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread

from worker.core import keys
from worker.core.errors import ConfigurationError, FlashcallError, StoreUnavailable
from worker.logs.structured import get_logger
from worker.process.health import Heartbeat, health_dir
from worker.process.heap import freeze_long_lived
from worker.process.runtime import Runtime
from worker.process.settings import Settings
from worker.redis.library import install

__all__ = ["EXIT_BOOT_FAILED", "EXIT_CONFIGURATION", "RETRY_DELAYS", "WAIT_WARNING_INTERVAL", "RuntimeBoot"]

log = get_logger(__name__)

_BOOT_TIMEOUT = 30.0
#: Closing providers and Redis pools takes milliseconds; more only when something blocks the loop.
_STOP_TIMEOUT = 3.0

EXIT_CONFIGURATION = 2
"""A process's exit status when its settings or routing file are wrong: `flashcall`'s own."""
EXIT_BOOT_FAILED = 3
"""When its boot failed otherwise (Redis refused it): Dramatiq's for a broker it cannot reach."""

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
"""Seconds before each boot attempt while Redis is away, the last repeated: a worker started
just before Redis boots within a second of it, one waiting longer costs Redis a connection
attempt every 5 s."""
WAIT_WARNING_INTERVAL = 30.0
"""While a process waits for Redis it says so when it starts waiting, then once this often."""

#: What Redis being away looks like at boot: it will pass. A wrong password or an ACL that
#: refuses a command (AuthenticationError, NoPermissionError) will not.
_AWAY: tuple[type[BaseException], ...] = (
    redis.BusyLoadingError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    StoreUnavailable,
    TimeoutError,
    ConnectionRefusedError,
)
_NOT_AWAY: tuple[type[BaseException], ...] = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
)

#: How often a consumer held back until the runtime is up looks whether its worker stops.
_HOLD_POLL = 0.5


def _redis_away(error: BaseException) -> bool:
    if isinstance(error, _NOT_AWAY):
        return False
    return isinstance(error, (*_AWAY, redis.ConnectionError))


class RuntimeBoot(dramatiq.Middleware):
    """Must come after Dramatiq's AsyncIO middleware, whose event loop it builds on."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        warning_interval: float = WAIT_WARNING_INTERVAL,
    ) -> None:
        self._client = client
        self._retry_delays = retry_delays
        self._warning_interval = warning_interval
        self._runtime: Runtime | None = None
        self._booted = threading.Event()
        self._waiting: asyncio.Task[None] | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            settings = Settings.from_env()
            # Set by ProcessRoles, or Dramatiq's --queues: None for every queue.
            queues = worker.consumer_whitelist
            routes = not queues or keys.VERIFY_QUEUE in queues
            loop = _loop()
        except Exception as error:  # noqa: BLE001 - whatever it is, the process must not consume
            _end_process(error)
        try:
            self._runtime = asyncio.run_coroutine_threadsafe(self._attempt(settings, routes), loop).result()
        except Exception as error:  # noqa: BLE001 - as above, unless it is Redis being away
            if not _redis_away(error):
                _end_process(error)
            waiting = self._boot_once_redis_answers(settings, routes, error)
            self._waiting = asyncio.run_coroutine_threadsafe(_spawn(waiting), loop).result(_STOP_TIMEOUT)
            return
        self._booted.set()

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        """Holds each consumer back until the runtime is up (at once after a boot that found
        Redis), or until its worker stops it: a message fetched before would meet no runtime."""
        while not self._booted.wait(_HOLD_POLL):
            if not thread.running:
                return

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._booted.is_set():
            freeze_long_lived()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # A boot still waiting for Redis stops waiting: its consumers will take nothing. It
        # is awaited, not only cancelled, so that it removes its heartbeat before the event
        # loop stops.
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            try:
                asyncio.run_coroutine_threadsafe(_cancelled(waiting), _loop()).result(_STOP_TIMEOUT)
            except TimeoutError:
                log.warning("the boot waiting for Redis did not stop in time", waited_s=_STOP_TIMEOUT)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # After the worker threads, not before: closing the providers under a call in flight
        # failed it as "disconnected" and the verification went on to its next step at once,
        # a second call to someone the first may have reached. Before the event loop stops
        # (Dramatiq runs these hooks in reverse order: AsyncIO's comes after this one).
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        # Dramatiq's stop joins its worker threads for the shutdown timeout: a thread still
        # alive is one still processing its message.
        in_flight = sum(thread.is_alive() for thread in worker.workers)
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

    async def _attempt(self, settings: Settings, routes: bool) -> Runtime:
        async def boot() -> Runtime:
            # Before any consumer starts: the first message may already call a function.
            await asyncio.to_thread(install, self._client)
            return await Runtime.start(settings, routes=routes)

        return await asyncio.wait_for(boot(), _BOOT_TIMEOUT)

    async def _boot_once_redis_answers(self, settings: Settings, routes: bool, error: BaseException) -> None:
        """On the event loop, as the heartbeat is (a wedged loop must stop it)."""
        heartbeat = Heartbeat(health_dir())
        beating = asyncio.create_task(heartbeat.run())
        began = time.monotonic()
        warned_at: float | None = None
        attempt = 0
        try:
            while True:
                delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
                attempt += 1
                now = time.monotonic()
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                heartbeat.waiting(f"waiting for Redis ({now - began:.0f} s so far): {reason}")
                if warned_at is None or now - warned_at >= self._warning_interval:
                    warned_at = now
                    log.warning(
                        "worker process waiting for Redis; it takes no message until it has booted",
                        error=reason,
                        waited_s=round(now - began),
                        retry_every_s=self._retry_delays[-1],
                    )
                await asyncio.sleep(delay)
                try:
                    self._runtime = await self._attempt(settings, routes)
                except Exception as failure:  # whatever it is, the process must not consume
                    # Python 3.11's wait_for answers a cancellation that meets its inner
                    # attempt's failure with the failure: the worker is stopping all the same.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError from failure
                    if not _redis_away(failure):
                        _end_process_now(failure)
                    error = failure
                    continue
                break
        except BaseException:
            heartbeat.remove()
            raise
        finally:
            beating.cancel()
        heartbeat.booted()
        log.info("Redis answers: worker process booted", waited_s=round(time.monotonic() - began))
        freeze_long_lived()
        self._booted.set()


async def _spawn(waiting: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.create_task(waiting)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _refusal(error: BaseException) -> int:
    unexpected = not isinstance(error, FlashcallError | redis.RedisError | TimeoutError)
    code = EXIT_CONFIGURATION if isinstance(error, ConfigurationError) else EXIT_BOOT_FAILED
    log.critical(
        "worker process cannot start; it exits before taking any message",
        error=str(error) or type(error).__name__,
        exit_status=code,
        exc_info=unexpected,
    )
    return code


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
    code = _refusal(error)
    # Dramatiq's event loop thread is no daemon: the exiting process would wait for it.
    thread = get_event_loop_thread()
    if thread is not None:
        thread.stop()  # type: ignore[no-untyped-call]
    raise SystemExit(code)


def _end_process_now(error: Exception) -> NoReturn:
    """End this process from its event loop, after it waited for Redis: its consumers exist
    but hold back (no message was fetched), and the main thread sleeps in Dramatiq's loop,
    out of reach of an exception. The main process sees the status, as after _end_process."""
    code = _refusal(error)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _loop() -> asyncio.AbstractEventLoop:
    thread = get_event_loop_thread()
    if thread is None:
        raise RuntimeError("RuntimeBoot needs Dramatiq's AsyncIO middleware before it")
    return thread.loop
