"""A circuit breaker per provider, shared by every worker process through Redis.

pybreaker supplies the breaker model and its listeners. Its own Redis storage is not
atomic across processes and lets every process send a trial call, and its `call()` holds
a lock for the whole wrapped call, so it is used differently here:

- Admission happens before the provider is called, inside `flashcall_begin_attempt`
  (worker/redis/flashcall.lua), atomically with claiming the attempt: an open breaker
  refuses, and once its reset timeout is over exactly one trial call is let through
  cluster-wide, under a lease that lapses if the process making it dies.
- Afterwards the outcome is recorded by handing pybreaker a function that only returns
  or raises the classified result, so its lock is held for microseconds; its storage is
  Redis, and the transition that matters across processes (the failure that opens the
  breaker) is one function of the library.

Only a provider's own faults count (timeouts, 5xx, account errors): `exclude` keeps the
user's bad number and a provider's per-number refusals out, as successes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import pybreaker
import redis

from worker.core import keys
from worker.core.verification import Outcome
from worker.logs.structured import get_logger
from worker.providers.base import CodeCheck, SendResult
from worker.redis import functions
from worker.routing.config import BreakerConfig

__all__ = ["Breakers", "ProviderFault", "RedisBreakerStorage"]

log = get_logger(__name__)


class ProviderFault(Exception):
    """The classified result of one call that did not succeed, handed to pybreaker."""

    def __init__(self, error_code: str | None, breaker_failure: bool) -> None:
        super().__init__(error_code or "failed")
        self.breaker_failure = breaker_failure


def _not_the_providers_fault(error: Any) -> bool:
    return isinstance(error, ProviderFault) and not error.breaker_failure


def _raise_fault(fault: ProviderFault | None) -> None:
    if fault is not None:
        raise fault


class RedisBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's state in `flashcall:breaker:<provider>`, read and written synchronously
    (from a worker thread: never on the event loop)."""

    def __init__(
        self, client: redis.Redis, name: str, fail_max: int, now: Callable[[], float] = time.time
    ) -> None:
        super().__init__(name)
        self._client = client
        self._now = now
        self._key = keys.breaker(name)
        self._fail_max = fail_max
        self._failures: int | None = None
        self.noticing = False
        """Set while pybreaker catches up with a state another process set."""

    @property
    def state(self) -> str:
        return cast(str | None, self._client.hget(self._key, "state")) or pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        functions.breaker_set(self._name, state, now_ms=self._now_ms()).run(self._client)

    def increment_counter(self) -> None:
        self._failures = functions.breaker_fail(
            self._name, fail_max=self._fail_max, now_ms=self._now_ms()
        ).run(self._client)

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    def reset_counter(self) -> None:
        # pybreaker also resets the counter when it merely notices that another process
        # closed the breaker; that close already reset it in Redis, and failures counted
        # since by other processes must stay.
        if self.noticing:
            return
        self._failures = 0
        self._client.hset(self._key, "failures", 0)

    def increment_success_counter(self) -> None:
        self._client.hincrby(self._key, "successes", 1)

    def reset_success_counter(self) -> None:
        if self.noticing:
            return
        self._client.hset(self._key, "successes", 0)

    @property
    def counter(self) -> int:
        # Read right after the increment that produced it, within pybreaker's lock.
        if self._failures is not None:
            failures, self._failures = self._failures, None
            return failures
        return int(cast(str | None, self._client.hget(self._key, "failures")) or 0)

    @property
    def success_counter(self) -> int:
        return int(cast(str | None, self._client.hget(self._key, "successes")) or 0)

    @property
    def opened_at(self) -> datetime | None:
        raw = cast(str | None, self._client.hget(self._key, "opened_at"))
        return datetime.fromtimestamp(int(raw) / 1000, UTC) if raw else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        # pybreaker stamps it with the wall clock; the admission check in Redis compares it
        # with the clock its callers pass, which is this storage's.
        self._client.hset(self._key, "opened_at", self._now_ms())


class _StateLog(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else None
        log.warning(
            "circuit breaker changed state", provider=cb.name, old_state=old, new_state=new_state.name
        )


class Breakers:
    """The breakers of one routing configuration, by provider name."""

    def __init__(
        self, client: redis.Redis, configs: Mapping[str, BreakerConfig], now: Callable[[], float] = time.time
    ) -> None:
        listener = _StateLog()
        self._storages = {
            name: RedisBreakerStorage(client, name, config.fail_max, now) for name, config in configs.items()
        }
        self._breakers = {
            name: pybreaker.CircuitBreaker(
                fail_max=config.fail_max,
                reset_timeout=config.reset_timeout,
                exclude=[_not_the_providers_fault],
                listeners=[listener],
                state_storage=self._storages[name],
                name=name,
            )
            for name, config in configs.items()
        }

    async def record(self, name: str, admission: str, result: SendResult | CodeCheck) -> None:
        """Record one call's result under the admission it was made with."""
        if isinstance(result, SendResult):
            failed = result.outcome is not Outcome.DELIVERED
            fault = ProviderFault(result.error_code, result.breaker_failure) if failed else None
        else:
            fault = ProviderFault(result.error_code, True) if result.breaker_failure else None
        # A success with no failures behind it changes nothing: skip Redis altogether.
        if admission == "closed" and (fault is None or not fault.breaker_failure):
            return
        try:
            await asyncio.to_thread(self._record, name, admission, fault)
        except redis.RedisError as error:
            # The call's own result matters more than one count in its provider's breaker:
            # it is recorded next, and the breaker hears from the next call.
            log.warning("breaker not told of a result: Redis unreachable", provider=name, error=str(error))

    def _record(self, name: str, admission: str, fault: ProviderFault | None) -> None:
        breaker = self._breakers.get(name)
        if breaker is None:
            return
        # A result that arrives after the breaker moved on (opened by other calls, or tried
        # by another process) is not this breaker's business any more.
        expected = pybreaker.STATE_HALF_OPEN if admission == "trial" else pybreaker.STATE_CLOSED
        if breaker.current_state != expected:
            return
        storage = self._storages[name]
        storage.noticing = True
        try:
            breaker.state  # noqa: B018 - the getter brings pybreaker's cached state up to date
        finally:
            storage.noticing = False
        # pybreaker re-raises the fault, or its own error when the fault opens the breaker;
        # both are already recorded.
        with contextlib.suppress(ProviderFault, pybreaker.CircuitBreakerError):
            breaker.call(_raise_fault, fault)
