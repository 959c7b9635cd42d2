"""Whether an attempt's claim must reach a replica before its provider is called.

Redis replicates asynchronously: the primary acknowledges a write before any replica has
it, and a failover promotes a replica without what it had not received. A claim lost that
way lets the new primary's copy of the verification be claimed and called again: the user
is called twice. So while the primary has a replica, the claim and `WAIT 1 <ms>` travel in
one round trip on one connection (WAIT waits for the writes of its own connection), and
the provider is called only once a replica holds the claim (worker/redis/store.py).

What a process knows of its primary comes from `INFO replication`, read at most once a
second while it claims attempts, and again at once after a claim no replica acknowledged:

- **alone**: no replica online and acknowledging (`lag` <= MAX_LAG_S), on a primary (its
  `master_replid`) that never had one here or has had none for GRACE_S: claims are not
  waited for. A single Redis, the tests and `make run` send no WAIT at all.
- **waiting**: otherwise. A claim no replica acknowledged within the bound is handed back
  (ClaimUnreplicated); the message is retried, and the attempt is not called.
- **holding**: after such a claim, no claim is written on that primary until a replica has
  acknowledged everything up to it (INFO's replica offset) or the primary is alone again:
  the messages are retried meanwhile, and no more claims pile up that might survive
  unacknowledged (each of those waits for its lease before its verification moves on).

The grace is what holds claims across a failover: once the sentinels promote the replica,
the old primary has no replica left but keeps taking writes until clients learn of the new
one (a few seconds), then drops them when it is demoted. The new primary has a replid of
its own and starts alone: what is written there is the truth. A replica that dies (or
stops answering) for good holds claims for at most MAX_LAG_S + GRACE_S, within the
minute for which messages are retried; after that, claims go on unreplicated until a
replica acknowledges again.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from worker.core.errors import ClaimUnreplicated, ConfigurationError, StoreUnavailable
from worker.logs.structured import get_logger

__all__ = [
    "DEFAULT_WAIT_MS",
    "GRACE_S",
    "MAX_LAG_S",
    "READ_EVERY_S",
    "Mode",
    "ReplicaWatch",
    "Replication",
]

log = get_logger(__name__)

#: How long a claim waits for a replica's acknowledgement (FLASHCALL_REPLICA_WAIT_MS).
DEFAULT_WAIT_MS = 500
#: A replica acknowledges what it applied every second; one silent for longer than this is
#: not counted on (frozen, cut off, or busy loading).
MAX_LAG_S = 2
#: How long claims on a primary keep waiting after its last acknowledging replica went away.
GRACE_S = 10.0
#: How often INFO replication is read while claims are made.
READ_EVERY_S = 1.0


class Mode(enum.Enum):
    ALONE = "alone"
    WAITING = "waiting"
    HOLDING = "holding"


@dataclass(frozen=True, slots=True)
class Replication:
    """One reading of the primary's INFO replication."""

    replid: str
    offset: int
    """How far the primary has written (master_repl_offset)."""
    acknowledged: tuple[int, ...]
    """How far each replica that is online and acknowledging has applied it."""

    @classmethod
    def parse(cls, info: Mapping[str, Any]) -> Replication:
        replicas = [
            value for name, value in info.items() if name.startswith("slave") and isinstance(value, dict)
        ]
        return cls(
            replid=str(info.get("master_replid", "")),
            offset=int(info.get("master_repl_offset", 0)),
            acknowledged=tuple(
                int(replica.get("offset", 0))
                for replica in replicas
                if replica.get("state") == "online" and int(replica.get("lag", 0)) <= MAX_LAG_S
            ),
        )


class ReplicaWatch:
    """One process's view of its primary's replicas, and whether its claims wait for them."""

    def __init__(
        self, client: redis.asyncio.Redis, *, wait_ms: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.wait_ms = wait_ms
        self._client = client
        self._clock = clock
        self._reading: Replication | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()
        self._replicated_on = ""
        """The primary (replid) whose replicas last acknowledged, and when."""
        self._replicated_at = -math.inf
        self._hold: tuple[str, int] | None = None
        """(replid, offset): no claim is written there until a replica has applied up to offset."""
        self._mode: Mode | None = None

    async def read(self) -> Replication:
        """Read INFO replication now; ConfigurationError when the Redis user may not."""
        try:
            info = await self._client.info("replication")
        except redis.exceptions.NoPermissionError as error:
            raise ConfigurationError(
                f"the worker's Redis user may not run INFO replication ({error}): claims need it to "
                "know whether the primary has a replica; allow it with +info|replication "
                "(deploy/redis/users.acl)"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        reading = Replication.parse(info)
        self._reading, self._read_at = reading, self._clock()
        return reading

    async def mode(self) -> Mode:
        """What the next claim does; read again when the last reading is a second old."""
        reading = self._reading
        if reading is None or self._stale():
            async with self._lock:
                reading = self._reading
                if reading is None or self._stale():
                    reading = await self._read_quietly()
        return self._decide(reading)

    async def before_claim(self) -> bool:
        """Whether the claim must wait for a replica; raises ClaimUnreplicated while holding."""
        mode = await self.mode()
        if mode is Mode.HOLDING:
            raise ClaimUnreplicated(
                "no replica has caught up with the primary since a claim went unacknowledged; "
                "nothing was claimed and the message will be retried",
                written=False,
            )
        return mode is Mode.WAITING

    def acknowledged(self) -> None:
        """A replica acknowledged a claim: this primary is replicated."""
        if self._reading is not None:
            self._replicated_on, self._replicated_at = self._reading.replid, self._clock()

    async def unacknowledged(self) -> ClaimUnreplicated:
        """No replica acknowledged a claim: hold claims until one has caught up with it."""
        reading: Replication | None
        try:
            reading = await self.read()
        except StoreUnavailable:
            # Whatever it was written on is away now; the last reading's place will do.
            reading = self._reading
        if reading is not None:
            self._hold = (reading.replid, reading.offset)
            self._decide(reading)
        return ClaimUnreplicated(
            f"no replica acknowledged the claim within {self.wait_ms} ms; the provider was not called "
            "and the message will be retried",
            written=True,
        )

    def _stale(self) -> bool:
        return self._clock() - self._read_at >= READ_EVERY_S

    async def _read_quietly(self) -> Replication:
        try:
            return await self.read()
        except ConfigurationError as error:
            if self._reading is None:
                raise
            # The ACL changed under a running worker: go on with what was last known.
            log.error("replication state unknown; keeping the last reading", error=str(error))
            self._read_at = self._clock()
            return self._reading

    def _decide(self, reading: Replication) -> Mode:
        now = self._clock()
        if reading.acknowledged:
            self._replicated_on, self._replicated_at = reading.replid, now
        replicated = reading.replid == self._replicated_on and now - self._replicated_at < GRACE_S
        if self._hold is not None and (
            not replicated
            or self._hold[0] != reading.replid
            or max(reading.acknowledged, default=-1) >= self._hold[1]
        ):
            self._hold = None
        mode = Mode.ALONE if not replicated else Mode.HOLDING if self._hold else Mode.WAITING
        self._announce(mode)
        return mode

    def _announce(self, mode: Mode) -> None:
        previous, self._mode = self._mode, mode
        if mode is previous:
            return
        if mode is Mode.WAITING:
            log.info("claims wait for a replica before providers are called", wait_ms=self.wait_ms)
        elif mode is Mode.HOLDING:
            log.warning("no claims until a replica catches up with the primary")
        elif previous is not None:
            log.warning(
                "no replica acknowledges: claims are no longer copied before providers are called, "
                "and a failover now may call a user twice",
                after_s=GRACE_S,
            )
