"""What routing knows of each provider right now: breaker, money, spend, health, and the
conversion learned from verifications' outcomes.

All of it lives in Redis, written by every process as calls are made; each process that
routes reads it (`flashcall_routing_state`, and `flashcall_learning_state` when routing
learns) about once a second while it routes, before its first decision after a quiet
spell, and every 15 s while idle (worker/process/runtime.py), and ranks candidates from
that snapshot. The library's admission check, made when an attempt is claimed, is the
authority: the snapshot only saves asking about providers that would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.core.verification import Channel

__all__ = ["SKIP", "ChannelHealth", "Conversion", "LearnedKey", "ProviderState", "RoutingState", "leader_key"]


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
class Conversion:
    """What delivered attempts of one provider x channel x operator range came to, as
    decaying counts (recent attempts weigh most)."""

    trials: float = 0.0
    approvals: float = 0.0
    approval_ms: float = 0.0
    """Milliseconds from the attempt to its approval, summed over approvals."""

    @property
    def rate(self) -> float:
        """P(approved | delivered attempt)."""
        return min(1.0, self.approvals / self.trials) if self.trials > 0 else 0.0

    @property
    def seconds_to_approval(self) -> float | None:
        return self.approval_ms / self.approvals / 1000 if self.approvals > 0 else None

    @classmethod
    def from_raw(cls, raw: str, *, now_ms: int, half_life_s: float) -> Conversion:
        """'<attempts> <approvals> <ms to approval> <updated at ms>', faded to now."""
        trials, approvals, approval_ms, at_ms = raw.split(" ")
        keep = 2 ** (-max(0, now_ms - int(at_ms)) / (half_life_s * 1000))
        return cls(float(trials) * keep, float(approvals) * keep, float(approval_ms) * keep)


#: (provider, channel, operator range)
LearnedKey = tuple[str, Channel, str]


def leader_key(policy: str, channel: Channel, operator: str) -> str:
    """Where the leading choice of a policy's step on this channel, for this range, is kept."""
    return f"{policy}:{channel}:{operator}"


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
    learned: Mapping[LearnedKey, Conversion] = field(default_factory=dict)
    leaders: Mapping[str, str] = field(default_factory=dict)
    """leader_key -> the provider learned routing leads with, or SKIP."""
    recent: Mapping[tuple[str, Channel], Conversion] = field(default_factory=dict)
    """Each provider's conversion on a channel over every range, with a short memory."""
    overall: Mapping[tuple[str, Channel], Conversion] = field(init=False, default_factory=dict)
    """`learned` summed over operator ranges, per provider and channel."""

    def __post_init__(self) -> None:
        if self.learned:
            totals: dict[tuple[str, Channel], Conversion] = {}
            for (provider, channel, _), conversion in self.learned.items():
                before = totals.get((provider, channel), Conversion())
                totals[(provider, channel)] = Conversion(
                    before.trials + conversion.trials,
                    before.approvals + conversion.approvals,
                    before.approval_ms + conversion.approval_ms,
                )
            object.__setattr__(self, "overall", totals)

    @classmethod
    def from_json(
        cls,
        raw: Mapping[str, Any],
        learning: Mapping[str, Any] | None = None,
        *,
        now_ms: int = 0,
        half_life_s: float = 3600.0,
    ) -> RoutingState:
        """From `flashcall_routing_state`'s answer and, when routing learns,
        `flashcall_learning_state`'s."""
        providers = {name: ProviderState.from_json(state) for name, state in raw.items()}
        if not learning:
            return cls(providers)
        learned: dict[LearnedKey, Conversion] = {}
        recent: dict[tuple[str, Channel], Conversion] = {}
        for name, fields in learning["learned"].items():
            for where, value in fields.items():
                channel, operator = where.split("|")
                conversion = Conversion.from_raw(value, now_ms=now_ms, half_life_s=half_life_s)
                if operator == "*":
                    recent[(name, Channel(channel))] = conversion
                else:
                    learned[(name, Channel(channel), operator)] = conversion
        return cls(providers, learned, dict(learning["leaders"]), recent)

    def of(self, provider: str) -> ProviderState:
        return self.providers.get(provider, _UNKNOWN)


_UNKNOWN = ProviderState()

#: The leader of a step learned routing skips.
SKIP = "-"
