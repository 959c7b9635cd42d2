"""What every sandbox route shares: the state, the callback sender and the provider catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from aiohttp import web

from flashcall_dev.sandbox.callbacks import CallbackSender
from flashcall_dev.sandbox.state import SandboxState

__all__ = ["SANDBOX", "ProviderSettings", "ProviderSpec", "Sandbox"]


class ProviderSettings(Protocol):
    """A provider's own knobs, set through `POST /_sandbox/settings` (its limits, its code lifetime)."""

    def to_json(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One imitated provider: its routes and what the control API may script for it."""

    name: str
    """Also the path prefix the provider's routes are mounted under."""
    default_balance: Decimal
    error_codes: frozenset[str]
    """Send errors a script may ask for, verbatim from the provider's document."""
    states: frozenset[str]
    """Final call and SMS states a script may ask for."""
    build_app: Callable[[], web.Application]
    credentials: Mapping[str, str]
    """The sandbox's fixed test credentials, under the router's credential names for this type."""
    settings: Callable[[Mapping[str, Any]], ProviderSettings] | None = None
    """Reads the provider's settings from a `POST /_sandbox/settings` body (all but `provider`);
    raises scripting.InvalidInputError naming the field. None: the provider has no settings."""


@dataclass(slots=True)
class Sandbox:
    state: SandboxState
    providers: Mapping[str, ProviderSpec]
    callbacks: CallbackSender = field(default_factory=CallbackSender)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on shutdown, so hanging requests let the server stop."""
    provider_urls: Mapping[str, str] = field(default_factory=dict)
    """Where each provider is served, for the control API to tell."""
    settings: dict[str, ProviderSettings] = field(default_factory=dict)
    """Each provider's settings, by name, once set; until then the provider's defaults apply.
    A reset keeps them: they configure the provider, they are not its memory."""


SANDBOX = web.AppKey("sandbox", Sandbox)
