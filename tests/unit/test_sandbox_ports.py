"""The sandbox's default ports are the one place that says where each imitated provider
listens: `flashcall sandbox` serves them there, and the compose stack's workers look for
them there."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml

from flashcall_dev.sandbox import DEFAULT_PORT, default_provider_ports
from flashcall_dev.sandbox.app import PROVIDERS
from worker.cli import _parser
from worker.routing.config import url_override_variable

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"


def compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def test_the_sandbox_serves_its_providers_on_the_ports_after_its_control_port() -> None:
    assert default_provider_ports() == {
        "voicepassword": 8601,
        "gateway": 8602,
        "telphin": 8603,
        "mobilgroup": 8604,
    }
    assert default_provider_ports(9000)["mobilgroup"] == 9004


def test_the_sandbox_command_listens_on_the_default_control_port() -> None:
    assert _parser().parse_args(["sandbox"]).port == DEFAULT_PORT


def test_the_compose_sandbox_serves_every_provider_on_its_default_port() -> None:
    args = _parser().parse_args(compose()["services"]["sandbox"]["command"])

    assert args.port == DEFAULT_PORT
    assert args.provider_port == []


def test_the_compose_workers_find_each_provider_at_the_sandbox_default_port() -> None:
    environment = compose()["x-flashcall"]["environment"]
    expected = {
        url_override_variable(name): f"http://sandbox:{port}"
        for name, port in default_provider_ports().items()
    }

    assert {name: environment[name] for name in expected} == expected


def test_the_compose_workers_hold_the_sandbox_test_credentials() -> None:
    environment = compose()["x-flashcall"]["environment"]
    routing = yaml.safe_load((COMPOSE.parents[1] / "routing.yaml").read_text(encoding="utf-8"))
    specs = {spec.name: spec for spec in PROVIDERS}
    expected = {
        reference.removeprefix("env:"): specs[provider["type"]].credentials[credential]
        for provider in routing["providers"].values()
        for credential, reference in provider["credentials"].items()
    }

    assert {name: environment[name] for name in expected} == expected
