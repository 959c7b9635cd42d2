"""Learned routing across a cluster: two worker processes on one Redis learn from each
other's attempts, and together move off a provider whose calls stop converting.

Real processes, real HTTP: the sandbox answers both providers' APIs with success; the
"world" is this test, which types the code only of calls that reach the user. Here
VoicePassword's flash calls never do (the API accepts them, nobody's phone rings), while
MobilGroup's, dearer, always do.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from flashcall_dev.stack import LocalStack
from tests.support import OwnStack, Sandbox
from worker.client import Producer
from worker.core import keys
from worker.routing.config import load_routing
from worker.routing.report import explain, read_state
from worker.routing.select import exploring

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTING = """
providers:
  voicepassword:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    channels: {flashcall: {cost: 0.30}, voice: {cost: 0.50}}
  mobilgroup:
    type: mobilgroup
    base_url: https://voice.mobilgroup.ru
    credentials: {api_key: env:MOBILGROUP_API_KEY}
    channels: {flashcall: {cost: 0.40}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 2s}
      - {channel: voice}
limits:
  per_phone: [{limit: 100, per: 1m}]
learning: {explore: 0.25, min_samples: 3, memory: 20, hysteresis: 0.1}
"""
WAVE = 6
EXPLORE = 0.25

_numbers = itertools.count(7_000)


@pytest.fixture(scope="module")
def cluster(own_stack: OwnStack) -> Iterator[tuple[LocalStack, Sandbox, Producer]]:
    with own_stack(ROUTING) as stack:
        stack.start_worker(processes=2, threads=8, check_processes=0)
        sandbox = Sandbox(stack.sandbox_url)
        producer = Producer.from_url(stack.redis_url)
        yield stack, sandbox, producer
        producer.close()
        sandbox.close()


def verify(sandbox: Sandbox, producer: Producer, verification_id: str) -> str:
    """Start a verification and play its user; answer the provider of its first attempt."""
    phone = f"7999100{next(_numbers):04d}"
    producer.start(verification_id, "+" + phone)
    first = producer.wait_for(verification_id, {"delivered"}, timeout=15)
    if first["provider"] == "voicepassword" and first["channel"] == "flashcall":
        producer.wait_for(verification_id, {"delivered"}, timeout=15, where=lambda e: e["attempt"] == "2")
    code = sandbox.inbox(phone)[-1]["code"]
    assert producer.check(verification_id, code)["result"] == "approved"
    return str(first["provider"])


def wave(sandbox: Sandbox, producer: Producer, name: str) -> list[str]:
    with ThreadPoolExecutor(WAVE) as pool:
        return list(pool.map(lambda n: verify(sandbox, producer, f"{name}-{n}"), range(WAVE)))


def demotions(producer: Producer) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], producer.client.xrange(keys.EVENTS))
    return [fields for _, fields in entries if fields["event"] == "demoted"]


def test_both_processes_move_off_the_provider_whose_calls_do_not_convert(
    cluster: tuple[LocalStack, Sandbox, Producer],
) -> None:
    _, sandbox, producer = cluster
    first = wave(sandbox, producer, "learn-a")
    assert "voicepassword" in first, "the cheaper provider leads before anything is learned"
    deadline = time.monotonic() + 60
    while not demotions(producer):
        assert time.monotonic() < deadline, "learned routing never moved off VoicePassword"
        wave(sandbox, producer, f"learn-{time.monotonic_ns()}")
        # Both processes read the shared state about once a second.
    time.sleep(2)

    # Every attempt now, whichever of the two processes makes it, goes to MobilGroup, but
    # those that explore.
    expected = [
        "voicepassword" if exploring(f"learned-{n}", 0, EXPLORE) else "mobilgroup" for n in range(WAVE)
    ]
    assert "mobilgroup" in expected
    assert wave(sandbox, producer, "learned") == expected


def test_the_demotion_is_announced_once_for_the_cluster(
    cluster: tuple[LocalStack, Sandbox, Producer],
) -> None:
    _, _, producer = cluster
    [event] = demotions(producer)
    assert {k: event[k] for k in ("provider", "to_provider", "channel", "operator", "reason")} == {
        "provider": "voicepassword",
        "to_provider": "mobilgroup",
        "channel": "flashcall",
        "operator": "megafon",
        "reason": "learned",
    }


def test_the_shared_estimates_hold_what_both_processes_saw(
    cluster: tuple[LocalStack, Sandbox, Producer],
) -> None:
    _, _, producer = cluster
    learned: dict[str, Any] = {
        name: producer.client.hget(keys.PREFIX + f"learn:{name}", "flashcall|megafon")
        for name in ("voicepassword", "mobilgroup")
    }
    vp_trials, vp_approvals, *_ = str(learned["voicepassword"]).split(" ")
    mg_trials, mg_approvals, *_ = str(learned["mobilgroup"]).split(" ")
    assert (float(vp_trials) >= 3, float(vp_approvals)) == (True, 0)
    assert (float(mg_trials) >= WAVE, float(mg_approvals) / float(mg_trials)) == (True, 1.0)


def test_routing_explain_shows_what_the_cluster_learned(
    cluster: tuple[LocalStack, Sandbox, Producer],
) -> None:
    stack, _, producer = cluster
    config = load_routing(stack.routing_path, environ={})
    state = read_state(producer.client, config, now_ms=int(time.time() * 1000))

    text = explain(config, state, phone="79991000001")

    assert re.search(r"->\s+mobilgroup\s+0\.4\s.*100% of \d+ attempts.*chosen", text)
    assert re.search(r"voicepassword\s+0\.3\s.* 0% of \d+ attempts", text)
