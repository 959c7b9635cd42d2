"""The Verifier in-process, on the clocks it is given: the attempt is claimed at the
injected wall clock's time, and the provider's latency is measured on the injected
monotonic clock, so a test drives both.

The library runs on a redis-server of its own (no worker takes its messages); the
provider is the VoicePassword adapter, over HTTP to the session's sandbox.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from flashcall_dev.stack import LocalStack
from tests.integration.sandbox_access import adapter
from worker.client import Producer
from worker.core import keys
from worker.core.verification import Outcome
from worker.redis.store import Store
from worker.routing.breakers import Breakers
from worker.routing.config import RoutingConfig
from worker.routing.reload import Routing
from worker.routing.state import RoutingState
from worker.verification.events import AttemptEvent, CallStatusEvent, UnreplicatedClaimEvent
from worker.verification.verifier import Verifier

pytestmark = pytest.mark.integration

#: The seconds the provider's answer takes on the monotonic clock the test hands over.
LATENCY_S = 2.5


class Recorded:
    """An Observer keeping the attempt events."""

    def __init__(self) -> None:
        self.attempts: list[AttemptEvent] = []

    def attempt(self, event: AttemptEvent) -> None:
        self.attempts.append(event)

    def call_status(self, event: CallStatusEvent) -> None:
        return None

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None:
        return None


class SteppedClock:
    """A monotonic clock that moves LATENCY_S on from each reading to the next."""

    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        reading = self.seconds
        self.seconds += LATENCY_S
        return reading


@pytest.fixture
def routing(library: redis.Redis, stack: LocalStack) -> Routing:
    provider = adapter(stack, "voicepassword")
    config = RoutingConfig.model_validate(
        {
            "providers": {
                provider.name: {
                    "type": "voicepassword",
                    "base_url": stack.provider_urls["voicepassword"],
                    "credentials": {"api_key": "env:UNUSED"},
                    "channels": {"flashcall": {"cost": "0.30"}},
                }
            },
            "policies": {"default": {"steps": [{"channel": "flashcall"}]}},
        }
    )
    breakers = {name: entry.breaker for name, entry in config.providers.items()}
    return Routing(config=config, providers={provider.name: provider}, breakers=Breakers(library, breakers))


def started(library: redis.Redis, library_url: str, phone: str) -> int:
    """Start a verification; the wall clock the test gives the Verifier: the server's time,
    a minute on (well inside the verification's lifetime)."""
    producer = Producer.from_url(library_url)
    try:
        producer.start("clocked", "+" + phone)
    finally:
        producer.close()
    seconds, micros = library.time()
    return int(seconds) * 1000 + int(micros) // 1000 + 60_000


def advance_first_attempt(library_url: str, routing: Routing, observer: Recorded, *, now_ms: int) -> None:
    """Make the verification's first attempt as the advance actor would."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(library_url, decode_responses=True)
        verifier = Verifier(
            store=Store(client),
            routing=lambda: routing,
            state=RoutingState,
            code_secret=b"s" * 32,
            observer=observer,
            now=lambda: now_ms / 1000,
            monotonic=SteppedClock(),
        )
        try:
            await verifier.advance("clocked", 0, "start")
        finally:
            await client.aclose()
            for provider in routing.providers.values():
                await provider.aclose()

    asyncio.run(run())


def test_the_providers_latency_is_measured_on_the_injected_monotonic_clock(
    library: redis.Redis, library_url: str, routing: Routing, phone: str
) -> None:
    observer = Recorded()

    advance_first_attempt(library_url, routing, observer, now_ms=started(library, library_url, phone))

    [event] = observer.attempts
    assert (event.outcome, event.latency) == (Outcome.DELIVERED, LATENCY_S)


def test_the_attempt_is_claimed_at_the_injected_wall_clocks_time(
    library: redis.Redis, library_url: str, routing: Routing, phone: str
) -> None:
    now_ms = started(library, library_url, phone)

    advance_first_attempt(library_url, routing, Recorded(), now_ms=now_ms)

    stored = library.hgetall(keys.verification("clocked"))
    assert (stored["attempt_state"], stored["claimed_at"]) == ("delivered", str(now_ms))
