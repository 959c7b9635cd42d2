"""Read what routing knows (breakers, money, health, learned conversion) as of `now_ms`."""

from __future__ import annotations

from worker.core.verification import moscow_day
from worker.redis.store import Store
from worker.routing.config import RoutingConfig
from worker.routing.state import RoutingState

__all__ = ["refresh_state"]


async def refresh_state(store: Store, config: RoutingConfig, *, now_ms: int) -> RoutingState:
    """One snapshot of the routing state: two reads when routing learns, one otherwise."""
    names = sorted(config.providers)
    raw = await store.routing_state(
        now_ms=now_ms, window_ms=int(config.health.window * 1000), day=moscow_day(now_ms), providers=names
    )
    if config.learning is None:
        return RoutingState.from_json(raw)
    learning = await store.learning_state(names)
    return RoutingState.from_json(raw, learning, now_ms=now_ms, half_life_s=config.learning.half_life)
