"""What routing knows of each provider right now: breaker, money, spend and health.

All of it lives in Redis, written by every process as calls are made; each process reads
it in one call (`flashcall_routing_state`) about once a second and ranks candidates from
that snapshot. The library's admission check, made when an attempt is claimed, is the
authority: the snapshot only saves asking about providers that would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.providers.base import Channel

__all__ = ["ChannelHealth", "ProviderState", "RoutingState"]


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """Attempts on one channel of one provider over the health window."""

    delivered: int = 0
    failed: int = 0
    """Attempts that failed by the provider's own fault (the ones a breaker counts)."""
    latency_ms: int = 0
    """Total API time of those attempts."""

    @property
    def samples(self) -> int:
        return self.delivered + self.failed

    @property
    def success_rate(self) -> Decimal:
        # One success assumed, so that a provider never tried is not ranked at zero.
        return Decimal(self.delivered + 1) / Decimal(self.samples + 1)

    @property
    def mean_latency(self) -> Decimal:
        """Seconds."""
        return Decimal(self.latency_ms) / Decimal(1000 * self.samples) if self.samples else Decimal(0)


@dataclass(frozen=True, slots=True)
class ProviderState:
    breaker: str = "closed"
    failures: int = 0
    opened_at_ms: int = 0
    out_of_money: bool = False
    spent_today: Decimal = Decimal(0)
    balance: Decimal | None = None
    health: Mapping[Channel, ChannelHealth] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProviderState:
        return cls(
            breaker=str(raw["breaker"]),
            failures=int(raw["failures"]),
            opened_at_ms=int(raw["opened_at"]),
            # PTTL: -2 for no key; a positive number while the provider is out of rotation.
            out_of_money=int(raw["no_money_ms"]) > 0,
            spent_today=Decimal(int(raw["spent_e4"])) / 10000,
            balance=Decimal(raw["balance"]) if raw["balance"] else None,
            health={
                Channel(channel): ChannelHealth(int(h["ok"]), int(h["fail"]), int(h["ms"]))
                for channel, h in raw["health"].items()
            },
        )

    def breaker_open(self, now_ms: int, reset_timeout: float) -> bool:
        """Open and not yet due for its trial (half-open lets one trial through)."""
        if self.breaker == "open":
            return now_ms < self.opened_at_ms + int(reset_timeout * 1000)
        return False


@dataclass(frozen=True, slots=True)
class RoutingState:
    providers: Mapping[str, ProviderState] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RoutingState:
        return cls({name: ProviderState.from_json(state) for name, state in raw.items()})

    def of(self, provider: str) -> ProviderState:
        return self.providers.get(provider, _UNKNOWN)


_UNKNOWN = ProviderState()
