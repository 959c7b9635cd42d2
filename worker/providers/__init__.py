"""The provider registry: every provider type the router can speak to, by routing.yaml `type`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from worker.core.errors import ConfigurationError
from worker.providers.base import Provider
from worker.providers.gateway import Gateway
from worker.providers.mobilgroup import MobilGroup
from worker.providers.telphin import Telphin
from worker.providers.voicepassword import VoicePassword

if TYPE_CHECKING:
    from worker.routing.config import ProviderConfig

__all__ = ["PROVIDER_TYPES", "build_provider", "inspectable_provider"]

PROVIDER_TYPES: Mapping[str, type[Provider]] = {
    kind.type: kind for kind in (Gateway, MobilGroup, Telphin, VoicePassword)
}


def build_provider(name: str, config: ProviderConfig, environ: Mapping[str, str]) -> Provider:
    """A provider instance for one routing.yaml entry, its credentials read from the environment."""
    credentials: dict[str, str] = {}
    for credential, variable in config.credential_variables().items():
        value = environ.get(variable)
        if not value:
            raise ConfigurationError(
                f"provider {name}: environment variable {variable} (its {credential}) is not set"
            )
        credentials[credential] = value
    return PROVIDER_TYPES[config.type].from_config(
        name,
        base_url=config.base_url,
        timeout=config.timeout,
        credentials=credentials,
        options=config.options,
    )


def inspectable_provider(name: str, config: ProviderConfig) -> Provider:
    """A provider built without its credentials, to ask what it can serve; it never sends."""
    kind = PROVIDER_TYPES[config.type]
    return kind.from_config(
        name,
        base_url=config.base_url,
        timeout=config.timeout,
        credentials=dict.fromkeys(kind.credential_names, "unchecked"),
        options=config.options,
    )
