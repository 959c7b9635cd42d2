"""The verification model every layer shares: channels, outcomes, call states, the
verification as `flashcall:v:<id>` holds it, its final statuses, money and the Moscow day.

Plain values only: nothing here talks to Redis or a provider. worker/redis/flashcall.lua
writes the hash `Verification.from_hash` reads; the names of its fields and statuses are
the library's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "CallState",
    "Channel",
    "Outcome",
    "Verification",
    "moscow_day",
    "price_e4",
]


class Channel(StrEnum):
    FLASHCALL = "flashcall"
    VOICE = "voice"
    SMS = "sms"


class Outcome(StrEnum):
    """What happened to one attempt, as far as routing is concerned."""

    DELIVERED = "delivered"
    """The provider accepted the request; the call or SMS is on its way."""
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    NOT_ENOUGH_MONEY = "not_enough_money"
    BAD_NUMBER = "bad_number"
    """The number itself is wrong; no provider will reach it."""
    REFUSED = "refused"
    """This provider will not call this number (its spam list, a forbidden direction, its
    per-number limits); another provider may."""
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"


class CallState(StrEnum):
    """Where an earlier call or SMS stands, as its provider reports it afterwards."""

    IN_PROGRESS = "in_progress"
    """Not settled yet: still ringing, or an SMS on its way through the network."""
    DELIVERED = "delivered"
    """The call was answered, or the SMS delivered."""
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    """The phone was reached and did not take it. A flash call that ends so has still shown
    its caller number, and so its code."""
    PROVIDER_ERROR = "provider_error"
    """The call or SMS failed on the provider's side."""
    CANCELED = "canceled"


FINAL_STATUSES = frozenset({"approved", "failed", "expired", "canceled", "max_attempts"})

_REF_PREFIX = "ref:"


def price_e4(price: Decimal | None) -> int:
    """Roubles -> ten-thousandths of a rouble: costs add up exactly in Redis integers."""
    if price is None:
        return 0
    return int((price * 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Verification:
    """One read of `flashcall:v:<id>`."""

    id: str
    phone: str
    policy: str
    channels: tuple[Channel, ...]
    code_length: int
    # Defaults: as flashcall_start leaves a verification, before any attempt.
    status: str = "pending"
    attempt: int = 0
    attempt_state: str = ""
    """'' before the first attempt, then calling, delivered, unknown (a call that may have
    reached the user: its worker died during it), failed, timed_out or exhausted."""
    step: int | None = None
    channel: str = ""
    provider: str = ""
    tried: tuple[str, ...] = ()
    """Providers tried in the current step."""
    reason: str = ""
    delivered: int = 0
    refs: Mapping[str, str] = field(default_factory=dict)
    """Provider name -> its id of the last call it placed for this verification."""
    provider_ref: str = ""
    """The current attempt's id at its provider."""
    expires_at_ms: int = 0
    polls: int = 0
    """Status polls made so far."""
    claimed_at_ms: int = 0
    """When the current attempt was claimed: its step's timeout counts from then."""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def first(cls, verification_id: str, start: Mapping[str, Any]) -> Verification:
        """A verification as flashcall_start leaves it, from what its first `advance` carries."""
        return cls(
            id=verification_id,
            phone=str(start["phone"]),
            policy=str(start["policy"]),
            channels=tuple(Channel(name) for name in str(start["channels"]).split(",") if name),
            code_length=int(start["code_length"]),
            expires_at_ms=int(start["expires_at"]),
        )

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Verification:
        return cls(
            id=fields["id"],
            phone=fields["phone"],
            policy=fields["policy"],
            channels=tuple(Channel(name) for name in fields["channels"].split(",") if name),
            code_length=int(fields["code_length"]),
            status=fields["status"],
            attempt=int(fields["attempt"]),
            attempt_state=fields["attempt_state"],
            step=int(fields["step"]) if fields["step"] else None,
            channel=fields["channel"],
            provider=fields["provider"],
            tried=tuple(name for name in fields["tried"].split(",") if name),
            reason=fields["reason"],
            delivered=int(fields["delivered"]),
            refs={k[len(_REF_PREFIX) :]: v for k, v in fields.items() if k.startswith(_REF_PREFIX)},
            provider_ref=fields.get("provider_ref", ""),
            expires_at_ms=int(fields["expires_at"]),
            polls=int(fields.get("polls", "0")),
            claimed_at_ms=int(fields.get("claimed_at") or 0),
        )

    def after_attempt(
        self, *, step: int, channel: Channel, provider: str, state: str, reason: str
    ) -> Verification:
        """This verification as the library leaves it after an attempt it began and settled."""
        tried = (*self.tried, provider) if step == self.step else (provider,)
        return replace(
            self,
            attempt=self.attempt + 1,
            attempt_state=state,
            step=step,
            channel=channel,
            provider=provider,
            tried=tried,
            reason=reason,
        )


_MOSCOW_OFFSET_MS = 3 * 3_600_000


def moscow_day(now_ms: int) -> str:
    """YYYYMMDD in Moscow, where the providers bill: daily budgets reset at its midnight."""
    return _day((now_ms + _MOSCOW_OFFSET_MS) // 86_400_000)


@functools.lru_cache(maxsize=4)
def _day(days_since_epoch: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(days_since_epoch * 86_400))
