"""The provider registry: every provider type the router can speak to, by routing.yaml `type`.

It sits above the adapters and below routing: routing.config validates each provider entry
against its type here, and this module knows of an entry only what `ProviderEntry` names, so
that it never imports routing back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from worker.core.errors import ConfigurationError
from worker.providers.base import Provider
from worker.providers.gateway import Gateway
from worker.providers.mobilgroup import MobilGroup
from worker.providers.telphin import Telphin
from worker.providers.voicepassword.adapter import VoicePassword

__all__ = ["PROVIDER_TYPES", "ProviderEntry", "build_provider", "inspectable_provider"]

PROVIDER_TYPES: Mapping[str, type[Provider]] = {
    kind.type: kind for kind in (Gateway, MobilGroup, Telphin, VoicePassword)
}


class ProviderEntry(Protocol):
    """What building a provider reads of its routing.yaml entry (routing.config.ProviderConfig
    is one): its type, URL, timeout and options, and the environment variable that holds each
    credential (credential name -> variable)."""

    @property
    def type(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def options(self) -> Mapping[str, str]: ...
    def credential_variables(self) -> dict[str, str]: ...


def build_provider(name: str, config: ProviderEntry, environ: Mapping[str, str]) -> Provider:
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


def inspectable_provider(name: str, config: ProviderEntry) -> Provider:
    """A provider built without its credentials, to ask what it can serve; it never sends."""
    kind = PROVIDER_TYPES[config.type]
    return kind.from_config(
        name,
        base_url=config.base_url,
        timeout=config.timeout,
        credentials=dict.fromkeys(kind.credential_names, "unchecked"),
        options=config.options,
    )
