"""The control API under `/_sandbox/`: how tests, the demo and benchmarks script and inspect providers.

It never waits for the sandbox-wide latency: that models the providers, not the sandbox itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from flashcall_dev.sandbox.scripting import InvalidInputError, parse_balance, parse_latency, parse_script
from flashcall_dev.sandbox.shared import SANDBOX, ProviderSettings, ProviderSpec

__all__ = ["build_app"]


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as error:
        raise InvalidInputError("body", "must be JSON") from error


def _refusal(error: InvalidInputError) -> web.Response:
    return web.json_response({"error": error.message, "field": error.field}, status=400)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    await sandbox.callbacks.cancel_all()
    sandbox.state.reset()
    return web.json_response({"ok": True})


async def script(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    try:
        parsed = parse_script(await _body(request), sandbox.providers)
    except InvalidInputError as error:
        return _refusal(error)
    sandbox.state.set_script(parsed.provider.name, parsed.number, parsed.steps, parsed.chance)
    return web.json_response(
        {"ok": True, "provider": parsed.provider.name, "number": parsed.number, "steps": len(parsed.steps)}
    )


async def balance(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    try:
        spec, amount = parse_balance(await _body(request), sandbox.providers)
    except InvalidInputError as error:
        return _refusal(error)
    sandbox.state.accounts[spec.name].balance = amount
    return web.json_response({"ok": True, "provider": spec.name, "balance": str(amount)})


async def latency(request: web.Request) -> web.Response:
    sandbox = request.config_dict[SANDBOX]
    try:
        sandbox.state.latency_ms = parse_latency(await _body(request))
    except InvalidInputError as error:
        return _refusal(error)
    return web.json_response({"ok": True, "latency_ms": sandbox.state.latency_ms})


def _parse_settings(value: Any, providers: Mapping[str, ProviderSpec]) -> tuple[str, ProviderSettings]:
    if not isinstance(value, dict):
        raise InvalidInputError("body", "must be a JSON object")
    configurable = sorted(name for name, spec in providers.items() if spec.settings is not None)
    name = value.get("provider")
    spec = providers.get(name) if isinstance(name, str) else None
    if spec is None or spec.settings is None:
        raise InvalidInputError("provider", f"must be one of {configurable}")
    return spec.name, spec.settings({key: item for key, item in value.items() if key != "provider"})


async def settings(request: web.Request) -> web.Response:
    """Set a provider's own settings; those left out take their defaults again."""
    sandbox = request.config_dict[SANDBOX]
    try:
        name, parsed = _parse_settings(await _body(request), sandbox.providers)
    except InvalidInputError as error:
        return _refusal(error)
    sandbox.settings[name] = parsed
    return web.json_response({"ok": True, "provider": name, "settings": parsed.to_json()})


async def inbox(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    messages = request.config_dict[SANDBOX].state.inbox(number)
    return web.json_response({"number": number, "messages": [message.to_json() for message in messages]})


async def records(request: web.Request) -> web.Response:
    found = request.config_dict[SANDBOX].state.find_records(
        provider=request.query.get("provider"), number=request.query.get("number")
    )
    return web.json_response({"records": [record.to_json() for record in found]})


async def providers(request: web.Request) -> web.Response:
    return web.json_response(dict(request.config_dict[SANDBOX].provider_urls))


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/providers", providers)
    app.router.add_post("/reset", reset)
    app.router.add_post("/script", script)
    app.router.add_post("/balance", balance)
    app.router.add_post("/latency", latency)
    app.router.add_post("/settings", settings)
    app.router.add_get("/inbox/{number}", inbox)
    app.router.add_get("/records", records)
    return app
