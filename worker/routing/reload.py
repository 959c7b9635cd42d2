"""The routing configuration a worker process runs on, and its reload when the file changes.

The file is read again every few seconds and compared by content, not by its time stamp:
Kubernetes updates a mounted ConfigMap by swapping a symlink, and an editor can save twice
within a second. A changed file that validates (and whose providers can be built) becomes
the new snapshot in one reference swap; every message reads one snapshot throughout. One
that does not is refused with a logged error, and the last good configuration stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.core.errors import ConfigurationError
from worker.logs.structured import get_logger
from worker.providers.base import Provider
from worker.providers.registry import build_provider
from worker.routing.breakers import Breakers
from worker.routing.config import RoutingConfig, load_routing

__all__ = ["Routing", "RoutingHolder"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Routing:
    """One snapshot: the configuration, the providers and breakers built from it."""

    config: RoutingConfig
    providers: Mapping[str, Provider]
    breakers: Breakers


class RoutingHolder:
    @staticmethod
    def check(path: Path, environ: Mapping[str, str]) -> RoutingConfig:
        """Read the file and build its providers as a worker process would, without
        connecting anywhere (their HTTP clients are made on first use, and breakers, which
        read Redis, are left out): ConfigurationError says what a process would fail on."""
        config = load_routing(path, environ)
        _providers(config, environ, {})
        return config

    def __init__(self, path: Path, environ: Mapping[str, str], breaker_client: redis.Redis) -> None:
        self._path = path
        self._environ = environ
        self._breaker_client = breaker_client
        text = self._read()
        self.current = self._build(load_routing(path, environ), {})
        self._digest = _digest(text)
        self._refused: str | None = None

    def _read(self) -> bytes:
        return self._path.read_bytes()

    def _build(self, config: RoutingConfig, reusable: Mapping[str, tuple[object, Provider]]) -> Routing:
        providers = _providers(config, self._environ, reusable)
        breakers = Breakers(
            self._breaker_client, {name: entry.breaker for name, entry in config.providers.items()}
        )
        return Routing(config=config, providers=providers, breakers=breakers)

    def reload_if_changed(self) -> list[Provider] | None:
        """Swap in the file's new configuration if it changed and is valid; answer the
        providers it retired (to be closed once their calls in flight are over), or None
        when nothing changed."""
        try:
            text = self._read()
        except OSError as error:
            log.error("routing file unreadable; the last good configuration stays", error=str(error))
            return None
        digest = _digest(text)
        if digest == self._digest:
            return None
        old = self.current
        try:
            config = load_routing(self._path, self._environ)
            reusable = {
                name: (old.config.providers[name], provider) for name, provider in old.providers.items()
            }
            new = self._build(config, reusable)
        except ConfigurationError as error:
            if self._refused != digest:
                log.error("routing file refused; the last good configuration stays", error=str(error))
                self._refused = digest
            return None
        self.current, self._digest, self._refused = new, digest, None
        kept = {id(provider) for provider in new.providers.values()}
        retired = [provider for provider in old.providers.values() if id(provider) not in kept]
        log.info(
            "routing file reloaded",
            providers=sorted(new.providers),
            policies=sorted(config.policies),
            retired=sorted(provider.name for provider in retired),
        )
        return retired


def _providers(
    config: RoutingConfig, environ: Mapping[str, str], reusable: Mapping[str, tuple[object, Provider]]
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, entry in config.providers.items():
        if not entry.enabled:
            continue
        kept = reusable.get(name)
        # An unchanged entry keeps its provider, and with it its connection pool.
        providers[name] = kept[1] if kept and kept[0] == entry else build_provider(name, entry, environ)
    return providers


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()
