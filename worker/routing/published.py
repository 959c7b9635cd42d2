"""What flashcall_start must know of routing.yaml, published to Redis by every worker."""

from __future__ import annotations

from worker.redis.functions import PublishedConfig
from worker.routing.config import RateLimit, RoutingConfig
from worker.routing.operators import prefix_table

__all__ = ["published"]


def _windows(rules: tuple[RateLimit, ...]) -> tuple[tuple[int, int], ...]:
    return tuple((rule.limit, int(rule.per * 1000)) for rule in rules)


def published(config: RoutingConfig) -> PublishedConfig:
    """The policy names start accepts, and the limits it enforces with what they count by."""
    keyed = {name: _windows(rules) for name, rules in config.limits.keyed.items()}
    return PublishedConfig(
        policies=tuple(sorted(config.policies)),
        per_phone=_windows(config.limits.per_phone),
        keyed=keyed,
        # Only a limit per operator needs them: a few hundred fields otherwise written for nothing.
        operators=prefix_table(config.operators) if "per_operator" in keyed else {},
        lists=config.fraud.lists,
        guard=config.fraud.guard.published if config.fraud.guard else None,
    )
