"""`flashcall api` over real HTTP, in front of the session's Redis, worker and sandbox.

Every route answers what the Redis contract answers (docs/protocol.md): a 2xx with the
library's own JSON, or an RFC 9457 problem whose `reason` is the contract's word. The API
adds authentication by key, the key's name in the verification's metadata and metrics, the
Idempotency-Key header, and a check answered synchronously.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support import Sandbox
from worker.client import Producer

pytestmark = pytest.mark.integration


def start(client: httpx.Client, verification_id: str, phone: str, **fields: object) -> httpx.Response:
    return client.post("/v1/verifications", json={"id": verification_id, "phone": "+" + phone, **fields})


def delivered(producer: Producer, verification_id: str) -> dict[str, str]:
    return producer.wait_for(verification_id, {"delivered", "failed"})


def code_of(sandbox: Sandbox, phone: str) -> str:
    messages = sandbox.inbox(phone)
    assert messages, "nothing reached the phone"
    code: str = messages[-1]["code"]
    return code


class TestStart:
    def test_a_start_answers_201_with_the_verifications_location(
        self, api_client: httpx.Client, verification_id: str, phone: str
    ) -> None:
        answer = start(api_client, verification_id, phone)

        assert answer.status_code == 201
        assert answer.headers["location"] == f"/v1/verifications/{verification_id}"
        assert answer.json() == {"id": verification_id, "created": True, "status": "pending"}
