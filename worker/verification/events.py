"""What happens to a verification's calls, as one event that every sink receives.

The verifier emits an event per provider call and per call status it learns; logs and
metrics subscribe to them, so that routing code holds no metric or log calls of its own.
(Changes of a verification's state are written to `flashcall:events` by the Redis
library, atomically with the change itself.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from worker.core.verification import CallState, Outcome
from worker.logs.structured import get_logger

__all__ = [
    "AttemptEvent",
    "CallStatusEvent",
    "LogObserver",
    "Observer",
    "Observers",
    "UnreplicatedClaimEvent",
]

log = get_logger("worker.attempts")


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One provider call made for a verification, and what came of it."""

    verification_id: str
    attempt: int
    provider: str
    channel: str
    step: int
    outcome: Outcome
    latency: float
    """Seconds the provider's API took to answer."""
    price: Decimal | None
    """What a delivered call cost (the provider's price, or the configured one)."""
    error_code: str | None
    breaker_failure: bool


@dataclass(frozen=True, slots=True)
class CallStatusEvent:
    """A provider's later word on a delivered call (a callback or a poll)."""

    verification_id: str
    attempt: int
    provider: str
    channel: str
    state: CallState
    provider_state: str
    moved_on: bool
    """Whether it ended the attempt and moved the verification on."""


@dataclass(frozen=True, slots=True)
class UnreplicatedClaimEvent:
    """An attempt not called because no replica held its claim (worker/redis/replication.py)."""

    verification_id: str
    attempt: int
    provider: str
    written: bool
    """Whether the claim was written on the primary and went unacknowledged (if the primary
    keeps it, its attempt waits for its lease) or was held back before writing."""


class Observer(Protocol):
    def attempt(self, event: AttemptEvent) -> None: ...

    def call_status(self, event: CallStatusEvent) -> None: ...

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None: ...


class Observers:
    """Hands each event to every observer."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = tuple(observers)

    def attempt(self, event: AttemptEvent) -> None:
        for observer in self._observers:
            observer.attempt(event)

    def call_status(self, event: CallStatusEvent) -> None:
        for observer in self._observers:
            observer.call_status(event)

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None:
        for observer in self._observers:
            observer.claim_unreplicated(event)


class LogObserver:
    """One log line per call and per status: the verification's context is already bound."""

    def attempt(self, event: AttemptEvent) -> None:
        if event.outcome is Outcome.DELIVERED:
            log.info(
                "attempt delivered",
                attempt=event.attempt,
                price=str(event.price),
                latency_ms=round(event.latency * 1000),
            )
        else:
            log.warning(
                "attempt failed",
                attempt=event.attempt,
                outcome=str(event.outcome),
                error_code=event.error_code,
                breaker_failure=event.breaker_failure,
                latency_ms=round(event.latency * 1000),
            )

    def call_status(self, event: CallStatusEvent) -> None:
        log.info(
            "call did not reach the user" if event.moved_on else "call status",
            attempt=event.attempt,
            state=event.provider_state,
            call_state=str(event.state),
        )

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None:
        if event.written:
            log.warning(
                "no replica acknowledged the claim in time: provider not called, message retried",
                attempt=event.attempt,
            )
        else:
            # worker/redis/replication.py warns once when it starts holding claims.
            log.debug("claim held until a replica catches up: message retried", attempt=event.attempt)
