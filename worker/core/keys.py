"""Every Redis key and queue name the router uses, in one place.

The Lua library (worker/redis/flashcall.lua) builds the same names from the same prefix;
tests/unit/test_keys.py checks that the two agree.
"""

from __future__ import annotations

import hashlib

PREFIX = "flashcall:"

#: Dramatiq's namespace: queues live at flashcall:<queue>, next to everything else.
BROKER_NAMESPACE = "flashcall"

#: Starts, fallbacks and timeouts: anything that may place a provider call.
VERIFY_QUEUE = "verifications"
#: Code checks, on their own queue so that a user typing a code never waits behind starts.
CHECK_QUEUE = "checks"

EVENTS = PREFIX + "events"
TIMERS = PREFIX + "timers"
SEQUENCE = PREFIX + "seq"
#: The refused starts remembered, oldest first ("<ms> <id>"), so that they stay bounded.
REFUSED = PREFIX + "refused"


def verification(verification_id: str) -> str:
    return f"{PREFIX}v:{verification_id}"


def callback_token(token: str) -> str:
    """A callback token's record, named by the token's SHA-1: the verification keeps only the
    digest, so that whoever reads it cannot post as the provider."""
    return f"{PREFIX}callback:{hashlib.sha1(token.encode()).hexdigest()}"  # noqa: S324 - a name, not a MAC


def breaker(provider: str) -> str:
    return f"{PREFIX}breaker:{provider}"


def balance_poll(provider: str) -> str:
    """Held by the one process that asks this provider for its balance this minute."""
    return f"{PREFIX}provider:{provider}:balance_poll"


def wake(queue_name: str) -> str:
    """A list that producers push a token onto, so that idle consumers block instead of polling."""
    return f"{PREFIX}wake:{queue_name}"


def queue(queue_name: str) -> str:
    return f"{BROKER_NAMESPACE}:{queue_name}"


def queue_messages(queue_name: str) -> str:
    return f"{BROKER_NAMESPACE}:{queue_name}.msgs"


def dead_letters(queue_name: str) -> str:
    return f"{BROKER_NAMESPACE}:{queue_name}.XQ"


def dead_letter_messages(queue_name: str) -> str:
    return f"{BROKER_NAMESPACE}:{queue_name}.XQ.msgs"


def heartbeats() -> str:
    return f"{BROKER_NAMESPACE}:__heartbeats__"


def consumer_acks(broker_id: str, queue_name: str) -> str:
    return f"{BROKER_NAMESPACE}:__acks__.{broker_id}.{queue_name}"
