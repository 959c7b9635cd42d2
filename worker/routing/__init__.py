"""Routing: the routing.yaml models and the choice of provider for each attempt."""

from worker.routing.config import Policy, ProviderConfig, RoutingConfig, Step, load_routing
from worker.routing.select import Choice, GiveUp, next_attempt

__all__ = [
    "Choice",
    "GiveUp",
    "Policy",
    "ProviderConfig",
    "RoutingConfig",
    "Step",
    "load_routing",
    "next_attempt",
]
