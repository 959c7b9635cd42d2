"""The providers: one adapter per provider API behind base.py's Provider, and the registry
(registry.py) that knows them all by routing.yaml `type`."""
