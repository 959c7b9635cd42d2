"""`RoutingHolder`: the routing file a worker process runs on, reloaded when its content
changes. Each test calls `reload_if_changed()` as the runtime's reload loop does; the
holder's breakers need a Redis (the `library` fixture's), nothing else runs.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from worker.core.verification import Channel
from worker.routing.reload import RoutingHolder

pytestmark = pytest.mark.integration

ENVIRON = {"VP_KEY": "sandbox-voicepassword-key"}


def routing(**costs: str) -> str:
    """Providers vp-a and vp-b (flash call costs by name, with `_` for `-`)."""
    prices = {"vp-a": "0.30", "vp-b": "0.40"} | {name.replace("_", "-"): cost for name, cost in costs.items()}
    lines = ["providers:"]
    for name, cost in prices.items():
        lines += [
            f"  {name}:",
            "    type: voicepassword",
            "    base_url: https://vp.example.test",
            "    credentials: {api_key: env:VP_KEY}",
            f"    channels: {{flashcall: {{cost: {cost}}}}}",
        ]
    lines += ["policies:", "  default:", "    steps: [{channel: flashcall}]"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(routing(), encoding="utf-8")
    return routing_file


@pytest.fixture
def holder(path: Path, library: redis.Redis) -> RoutingHolder:
    return RoutingHolder(path, ENVIRON, library)


def cost(holder: RoutingHolder, name: str) -> Decimal:
    return holder.current.config.providers[name].channels[Channel.FLASHCALL].cost


def refusals(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [
        entry for entry in logs if entry["event"] == "routing file refused; the last good configuration stays"
    ]


def test_an_unchanged_file_is_not_reloaded(holder: RoutingHolder) -> None:
    assert holder.reload_if_changed() is None


def test_a_file_saved_again_with_the_same_content_is_not_reloaded(holder: RoutingHolder, path: Path) -> None:
    before = holder.current
    path.write_text(routing(), encoding="utf-8")
    os.utime(path, (1, 1))

    assert holder.reload_if_changed() is None
    assert holder.current is before


def test_a_changed_file_becomes_the_configuration_in_force(holder: RoutingHolder, path: Path) -> None:
    path.write_text(routing(vp_a="0.50"), encoding="utf-8")

    assert holder.reload_if_changed() is not None
    assert cost(holder, "vp-a") == Decimal("0.50")


def test_a_reload_is_logged_with_the_providers_and_policies(holder: RoutingHolder, path: Path) -> None:
    path.write_text(routing(vp_a="0.50"), encoding="utf-8")

    with capture_logs() as logs:
        holder.reload_if_changed()

    [entry] = [e for e in logs if e["event"] == "routing file reloaded"]
    assert (entry["providers"], entry["policies"], entry["retired"]) == (
        ["vp-a", "vp-b"],
        ["default"],
        ["vp-a"],
    )


def test_a_provider_whose_entry_did_not_change_keeps_its_instance(holder: RoutingHolder, path: Path) -> None:
    before = dict(holder.current.providers)
    path.write_text(routing(vp_a="0.50"), encoding="utf-8")

    retired = holder.reload_if_changed()

    assert holder.current.providers["vp-b"] is before["vp-b"]
    assert holder.current.providers["vp-a"] is not before["vp-a"]
    assert retired == [before["vp-a"]]


def test_an_invalid_file_is_refused_and_the_last_good_one_stays(holder: RoutingHolder, path: Path) -> None:
    before = holder.current
    path.write_text(routing(vp_a="-1"), encoding="utf-8")

    with capture_logs() as logs:
        assert holder.reload_if_changed() is None

    assert holder.current is before
    [entry] = refusals(logs)
    assert entry["log_level"] == "error"
    assert f"{path}:6: providers.vp-a.channels.flashcall.cost: " in str(entry["error"])


def test_a_refused_file_is_logged_once_however_often_it_is_read(holder: RoutingHolder, path: Path) -> None:
    path.write_text("providers: [", encoding="utf-8")

    with capture_logs() as logs:
        for _ in range(5):
            holder.reload_if_changed()

    assert len(refusals(logs)) == 1


def test_a_file_whose_provider_credentials_are_unset_is_refused(library: redis.Redis, path: Path) -> None:
    holder = RoutingHolder(path, ENVIRON, library)
    path.write_text(routing().replace("env:VP_KEY", "env:UNSET_KEY", 1), encoding="utf-8")

    with capture_logs() as logs:
        assert holder.reload_if_changed() is None

    assert "UNSET_KEY" in str(refusals(logs)[0]["error"])
    assert cost(holder, "vp-a") == Decimal("0.30")


def test_a_refused_file_once_fixed_is_taken(holder: RoutingHolder, path: Path) -> None:
    path.write_text("providers: [", encoding="utf-8")
    holder.reload_if_changed()
    path.write_text(routing(vp_a="0.20"), encoding="utf-8")

    assert holder.reload_if_changed() is not None
    assert cost(holder, "vp-a") == Decimal("0.20")


def test_a_missing_file_keeps_the_last_good_configuration(holder: RoutingHolder, path: Path) -> None:
    before = holder.current
    path.unlink()

    with capture_logs() as logs:
        assert holder.reload_if_changed() is None

    assert holder.current is before
    assert [e["event"] for e in logs] == ["routing file unreadable; the last good configuration stays"]


def test_a_symlink_swapped_to_another_file_is_reloaded(library: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(routing(), encoding="utf-8")
    (tmp_path / "v2.yaml").write_text(routing(vp_b="0.10"), encoding="utf-8")
    link = tmp_path / "routing.yaml"
    link.symlink_to("v1.yaml")
    holder = RoutingHolder(link, ENVIRON, library)
    staged = tmp_path / "routing.yaml.new"
    staged.symlink_to("v2.yaml")

    os.replace(staged, link)

    assert holder.reload_if_changed() is not None
    assert cost(holder, "vp-b") == Decimal("0.10")
