"""The timer loop: fires the deadlines kept in Redis (step timeouts, recoveries, expiries).

Dramatiq's own delayed messages are held in the memory of whichever worker fetched them
(up to 1,000 per thread) and return only after a dead worker's heartbeat times out; a
verification's deadlines instead sit in sorted sets in Redis, and every worker process
pops the due ones atomically, so each fires once and none is lost with a process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from worker.core.errors import StoreUnavailable
from worker.logs.structured import get_logger
from worker.redis.store import Store

__all__ = ["run_timers"]

log = get_logger(__name__)

#: Timers fired per call; a full batch means more are due, so the loop goes on at once.
BATCH = 500


async def run_timers(store: Store, *, interval: float, now: Callable[[], float] = time.time) -> None:
    """Run until cancelled."""
    unavailable_since: float | None = None
    while True:
        try:
            fired = await store.fire_timers(now_ms=int(now() * 1000), limit=BATCH)
        except StoreUnavailable as error:
            if unavailable_since is None:
                unavailable_since = time.monotonic()
                log.warning("timers paused: Redis is unreachable", error=str(error))
            await asyncio.sleep(1.0)
            continue
        if unavailable_since is not None:
            log.info("timers resumed", paused_seconds=round(time.monotonic() - unavailable_since, 1))
            unavailable_since = None
        if fired < BATCH:
            # Jitter keeps the processes of a cluster from polling in lockstep.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))  # noqa: S311
