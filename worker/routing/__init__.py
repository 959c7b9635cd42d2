"""Routing: routing.yaml, provider selection, breakers, the shared routing state and reloads."""

from worker.routing.config import Policy, ProviderConfig, RoutingConfig, Step, load_routing

__all__ = [
    "Policy",
    "ProviderConfig",
    "RoutingConfig",
    "Step",
    "load_routing",
]
