"""The timer loop: fires the deadlines kept in Redis (step timeouts, recoveries, expiries).

Dramatiq's own delayed messages are held in the memory of whichever worker fetched them
(up to 1,000 per thread) and return only after a dead worker's heartbeat times out; a
verification's deadlines instead sit in sorted sets in Redis, and every worker process
pops the due ones atomically, so each fires once and none is lost with a process.

Each pass also tells when the next timer falls due, and the loop sleeps until then, but
never longer than LONGEST_PAUSE: a timer another process adds after this pass, due sooner
than the one this pass saw, fires at most that late. An idle process so calls the library
about once a second (four commands), instead of five times a second; a busy one at most
once per `interval`, which batches the timers due meanwhile into one call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from worker.core.errors import StoreUnavailable
from worker.logs.structured import get_logger
from worker.redis.store import Store

__all__ = ["BATCH", "LONGEST_PAUSE", "pause_after", "run_timers"]

log = get_logger(__name__)

#: Timers fired per kind and call; a full batch means more are due, so the loop goes on at once.
BATCH = 500
#: Seconds: the longest the loop sleeps, however far off the next timer it knows of. It
#: bounds how late a timer fires that another process added, due sooner than that one.
LONGEST_PAUSE = 1.0


def pause_after(next_due_ms: int | None, *, began_ms: int, now_ms: int, interval: float) -> float:
    """Seconds to sleep after a pass that began at `began_ms`: until the next timer falls due
    (none when a full batch left some due), but no sooner than `interval` after the pass
    began and no later than about LONGEST_PAUSE from now."""
    if next_due_ms is not None and next_due_ms <= began_ms:
        return 0.0
    # Jitter keeps idle processes of a cluster from polling in lockstep.
    longest = max(interval, LONGEST_PAUSE * random.uniform(0.8, 1.0))  # noqa: S311
    due_in = longest if next_due_ms is None else (next_due_ms - now_ms) / 1000
    return min(max(due_in, interval - (now_ms - began_ms) / 1000), longest)


async def run_timers(store: Store, *, interval: float, now: Callable[[], float] = time.time) -> None:
    """Run until cancelled; `interval` is the shortest time between two passes."""
    unavailable_since: float | None = None
    while True:
        began = now()
        try:
            timers = await store.fire_timers(now_ms=int(began * 1000), limit=BATCH)
        except StoreUnavailable as error:
            if unavailable_since is None:
                unavailable_since = time.monotonic()
                log.warning("timers paused: Redis is unreachable", error=str(error))
            await asyncio.sleep(1.0)
            continue
        if unavailable_since is not None:
            log.info("timers resumed", paused_seconds=round(time.monotonic() - unavailable_since, 1))
            unavailable_since = None
        pause = pause_after(
            timers.next_due_ms, began_ms=int(began * 1000), now_ms=int(now() * 1000), interval=interval
        )
        if pause > 0:
            await asyncio.sleep(pause)
