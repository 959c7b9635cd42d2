"""Every provider type, over real HTTP to the sandbox: every documented send error and every
transport fault ends as the classified outcome, and no fault escapes `send()`.

The cases are generated from the adapters' own error lists (the ones docs/providers.md is
generated from), so a code added to a list is tested without a test being written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flashcall_dev.sandbox.app import PROVIDERS as SANDBOX_PROVIDERS
from flashcall_dev.stack import LocalStack
from tests.support import Sandbox
from worker.core import codes
from worker.core.verification import Channel, Outcome
from worker.providers.base import DocumentedError, Provider, SendRequest, SendResult
from worker.providers.registry import PROVIDER_TYPES

pytestmark = pytest.mark.integration

CREDENTIALS = {spec.name: spec.credentials for spec in SANDBOX_PROVIDERS}
TIMEOUT = 1.0

SEND_ERRORS = [
    pytest.param(kind, error, id=f"{kind}-{error.code}")
    for kind, provider in sorted(PROVIDER_TYPES.items())
    for error in provider.errors
    if error.request == "send"
]


def adapter(stack: LocalStack, kind: str) -> Provider:
    return PROVIDER_TYPES[kind].from_config(
        f"{kind}-under-test",
        base_url=stack.provider_urls[kind],
        timeout=TIMEOUT,
        credentials=CREDENTIALS[kind],
        options={},
    )


def first_request(provider: Provider, phone: str) -> SendRequest:
    """A request for the first channel the provider serves without an earlier call."""
    channel = next(c for c in sorted(Channel) if provider.supports(c, 4, None))
    code = codes.generate(4) if provider.router_generates_code(channel, 4) else None
    return SendRequest(channel=channel, phone=phone, code_length=4, code=code)


def send_once(provider: Provider, phone: str) -> SendResult:
    async def once() -> SendResult:
        try:
            return await provider.send(first_request(provider, phone))
        finally:
            await provider.aclose()

    return asyncio.run(once())


@pytest.fixture
def send(stack: LocalStack, phone: str) -> Callable[[str], SendResult]:
    """Send one request as `kind` to the test's phone through a fresh adapter."""
    return lambda kind: send_once(adapter(stack, kind), phone)


@pytest.mark.parametrize(("kind", "error"), SEND_ERRORS)
def test_every_documented_send_error_is_classified_as_the_table_says(
    send: Callable[[str], SendResult], sandbox: Sandbox, phone: str, kind: str, error: DocumentedError
) -> None:
    sandbox.script(phone, {"error_code": error.code}, provider=kind)
    result = send(kind)
    assert (result.outcome, result.breaker_failure, result.error_code) == (
        error.classification.outcome,
        error.classification.breaker_failure,
        error.code,
    )


FAULTS: list[tuple[str, dict[str, Any], Outcome, bool]] = [
    ("no answer in time", {"hang": True}, Outcome.TIMEOUT, True),
    ("a byte a second, never the whole answer", {"trickle": True}, Outcome.TIMEOUT, True),
    ("connection dropped", {"disconnect": True}, Outcome.PROVIDER_ERROR, True),
    ("HTTP 500", {"http_status": 500}, Outcome.PROVIDER_ERROR, False),
    (
        "HTTP 502 page",
        {"http_status": 502, "body": "<html>Bad Gateway</html>"},
        Outcome.PROVIDER_ERROR,
        False,
    ),
    ("HTTP 503", {"http_status": 503}, Outcome.PROVIDER_ERROR, False),
    ("HTTP 429", {"http_status": 429}, Outcome.PROVIDER_ERROR, False),
    ("a body that is not JSON", {"body": "OK, calling"}, Outcome.PROVIDER_ERROR, False),
    ("JSON of the wrong shape", {"body": "[1, 2, 3]"}, Outcome.PROVIDER_ERROR, False),
    ("an empty JSON object", {"body": "{}"}, Outcome.PROVIDER_ERROR, False),
]


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
@pytest.mark.parametrize(
    ("behaviour", "outcome", "uncertain"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_every_transport_fault_is_a_breaker_failure_and_never_raises(
    send: Callable[[str], SendResult],
    sandbox: Sandbox,
    phone: str,
    kind: str,
    behaviour: dict[str, Any],
    outcome: Outcome,
    uncertain: bool,
) -> None:
    sandbox.script(phone, behaviour, provider=kind)
    result = send(kind)
    assert (result.outcome, result.breaker_failure, result.uncertain) == (outcome, True, uncertain)


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_a_connection_refused_is_a_provider_error_that_placed_no_call(kind: str) -> None:
    provider = PROVIDER_TYPES[kind].from_config(
        "nowhere", base_url="http://127.0.0.1:9", timeout=TIMEOUT, credentials=CREDENTIALS[kind], options={}
    )
    result = send_once(provider, "79991234567")
    assert (result.outcome, result.error_code, result.breaker_failure, result.uncertain) == (
        Outcome.PROVIDER_ERROR,
        "connect_error",
        True,
        False,
    )


@pytest.mark.parametrize("kind", sorted(PROVIDER_TYPES))
def test_every_provider_type_is_imitated_by_the_sandbox(stack: LocalStack, kind: str) -> None:
    assert kind in stack.provider_urls
    assert set(CREDENTIALS[kind]) == set(PROVIDER_TYPES[kind].credential_names)
