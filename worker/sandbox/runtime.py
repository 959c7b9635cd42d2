"""What every sandbox route shares: the state, the callback sender and the provider catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from worker.sandbox.callbacks import CallbackSender
from worker.sandbox.state import SandboxState

__all__ = ["SANDBOX", "ProviderSpec", "Sandbox"]


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


@dataclass(slots=True)
class Sandbox:
    state: SandboxState
    providers: Mapping[str, ProviderSpec]
    callbacks: CallbackSender = field(default_factory=CallbackSender)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on shutdown, so hanging requests let the server stop."""
    provider_urls: Mapping[str, str] = field(default_factory=dict)
    """Where each provider is served, for the control API to tell."""


SANDBOX = web.AppKey("sandbox", Sandbox)
