"""`flashcall api` over real HTTP, in front of the session's Redis, worker and sandbox.

Every route answers what the Redis contract answers (docs/protocol.md): a 2xx with the
library's own JSON, or an RFC 9457 problem whose `reason` is the contract's word. The API
adds authentication by key, the key's name in the verification's metadata and metrics, the
Idempotency-Key header, and a check answered synchronously.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support import Api, Sandbox
from worker.client import Producer
from worker.redis import functions

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

PROBLEM = "application/problem+json"
COMMITTED_DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def start(client: httpx.Client, verification_id: str, phone: str, **fields: Any) -> httpx.Response:
    return client.post("/v1/verifications", json={"id": verification_id, "phone": "+" + phone, **fields})


def delivered_code(
    client: httpx.Client, producer: Producer, sandbox: Sandbox, verification_id: str, phone: str
) -> str:
    """Starts a verification over the API, waits until its call reached the phone; the code."""
    assert start(client, verification_id, phone).status_code == 201
    assert producer.wait_for(verification_id, {"delivered", "failed"})["event"] == "delivered"
    code: str = sandbox.inbox(phone)[-1]["code"]
    return code


def check(client: httpx.Client, verification_id: str, code: str) -> httpx.Response:
    return client.post(f"/v1/verifications/{verification_id}/check", json={"code": code})


def wrong(code: str) -> str:
    return "".join(str((int(digit) + 1) % 10) for digit in code)


def problem_of(answer: httpx.Response) -> dict[str, Any]:
    """The answer's problem details, checked to be RFC 9457 as docs/api.md describes them."""
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == answer.status_code
    assert body["type"] == f"urn:flashcall:problem:{body['reason']}"
    assert body["title"]
    assert body["detail"]
    return body


def reason_of(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, problem_of(answer)["reason"]


def library_refusal(producer: Producer, request: dict[str, Any]) -> str:
    """What the Redis contract answers the same start with, without the `flashcall: ` prefix."""
    with pytest.raises(redis.ResponseError) as refused:
        functions.start(json.dumps(request)).run(producer.client)
    return str(refused.value).removeprefix("flashcall: ")


class TestStart:
    def test_a_start_answers_201_with_the_verifications_location(
        self, api_client: httpx.Client, verification_id: str, phone: str
    ) -> None:
        answer = start(api_client, verification_id, phone)

        assert answer.status_code == 201
        assert answer.headers["location"] == f"/v1/verifications/{verification_id}"
        assert answer.json() == {"id": verification_id, "created": True, "status": "pending"}

    def test_a_repeated_start_answers_200_and_calls_nobody_again(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        delivered_code(api_client, producer, sandbox, verification_id, phone)

        again = start(api_client, verification_id, phone)

        assert (again.status_code, again.json()["created"]) == (200, False)
        assert len(sandbox.calls(phone)) == 1

    def test_the_idempotency_key_is_the_verifications_id(
        self, api_client: httpx.Client, producer: Producer, verification_id: str, phone: str
    ) -> None:
        answer = api_client.post(
            "/v1/verifications", json={"phone": "+" + phone}, headers={"Idempotency-Key": verification_id}
        )

        assert (answer.status_code, answer.json()["id"]) == (201, verification_id)
        assert producer.status(verification_id)["status"] != "not_found"

    def test_a_repeated_idempotency_key_calls_nobody_again(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        headers = {"Idempotency-Key": verification_id}
        api_client.post("/v1/verifications", json={"phone": "+" + phone}, headers=headers)
        producer.wait_for(verification_id, {"delivered", "failed"})

        again = api_client.post("/v1/verifications", json={"phone": "+" + phone}, headers=headers)

        assert (again.status_code, again.json()["created"]) == (200, False)
        assert len(sandbox.calls(phone)) == 1

    def test_an_idempotency_key_other_than_the_bodys_id_is_refused(
        self, api_client: httpx.Client, producer: Producer, verification_id: str, phone: str
    ) -> None:
        answer = api_client.post(
            "/v1/verifications",
            json={"id": verification_id, "phone": "+" + phone},
            headers={"Idempotency-Key": verification_id + "-other"},
        )

        assert reason_of(answer) == (400, "invalid_request")
        assert "differs from the id the request names" in answer.json()["detail"]
        assert producer.status(verification_id)["status"] == "not_found"

    def test_a_start_without_an_id_is_refused(self, api_client: httpx.Client, phone: str) -> None:
        answer = api_client.post("/v1/verifications", json={"phone": "+" + phone})

        assert reason_of(answer) == (400, "invalid_request")

    def test_an_id_used_for_another_phone_is_a_conflict(
        self, api_client: httpx.Client, verification_id: str, new_phone: Any
    ) -> None:
        start(api_client, verification_id, new_phone())

        answer = start(api_client, verification_id, new_phone())

        assert reason_of(answer) == (409, "id_conflict")

    @pytest.mark.parametrize(
        "fields",
        [
            {"phone": "12345"},
            {"phone": "+79991234567", "policy": "no-such-policy"},
            {"phone": "+79991234567", "metadata": [1, 2]},
            {"phone": "+79991234567", "colour": "red"},
        ],
        ids=["short-phone", "unknown-policy", "metadata-not-an-object", "unknown-field"],
    )
    def test_a_request_the_library_refuses_is_answered_with_the_librarys_own_message(
        self, api_client: httpx.Client, producer: Producer, verification_id: str, fields: dict[str, Any]
    ) -> None:
        request = {"id": verification_id, **fields}

        answer = api_client.post("/v1/verifications", json=request)

        assert reason_of(answer) == (400, "invalid_request")
        assert answer.json()["detail"] == library_refusal(producer, request)

    def test_a_body_that_is_not_json_is_refused_by_the_library(self, api_client: httpx.Client) -> None:
        answer = api_client.post(
            "/v1/verifications", content=b"{not json", headers={"Content-Type": "application/json"}
        )

        assert reason_of(answer) == (400, "invalid_request")

    def test_the_keys_name_goes_into_the_metadata_in_place_of_the_clients(
        self, api_client: httpx.Client, producer: Producer, verification_id: str, phone: str
    ) -> None:
        start(api_client, verification_id, phone, metadata={"order": 42, "api_key": "forged"})

        assert producer.status(verification_id)["metadata"] == {"order": 42, "api_key": "shop"}

    def test_a_body_not_sent_as_json_is_refused_with_415(self, api_client: httpx.Client, phone: str) -> None:
        answer = api_client.post("/v1/verifications", content=f"phone=+{phone}".encode())

        assert reason_of(answer) == (415, "unsupported_media_type")

    def test_a_body_over_the_librarys_limit_is_refused_with_413_unread(
        self, api_client: httpx.Client, verification_id: str, phone: str
    ) -> None:
        answer = start(api_client, verification_id, phone, metadata={"padding": "x" * 5000})

        assert reason_of(answer) == (413, "too_large")

    def test_a_body_over_the_limit_without_a_length_is_cut_off(self, api_client: httpx.Client) -> None:
        def chunks() -> Any:
            yield b'{"padding": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        answer = api_client.post(
            "/v1/verifications", content=chunks(), headers={"Content-Type": "application/json"}
        )

        assert reason_of(answer) == (413, "too_large")


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer not-a-key-of-this-api-0123456789abcdef"},
            {"Authorization": "Basic x"},
        ],
        ids=["no-key", "unknown-key", "another-scheme"],
    )
    def test_a_request_without_a_valid_key_is_refused_with_401(
        self, api: Api, verification_id: str, phone: str, producer: Producer, headers: dict[str, str]
    ) -> None:
        answer = httpx.post(
            f"{api.url}/v1/verifications",
            json={"id": verification_id, "phone": "+" + phone},
            headers=headers,
        )

        assert reason_of(answer) == (401, "unauthorized")
        assert answer.headers["www-authenticate"] == 'Bearer realm="flashcall"'
        assert producer.status(verification_id)["status"] == "not_found"

    def test_every_verification_route_asks_for_a_key(self, api: Api) -> None:
        answers = [
            httpx.get(f"{api.url}/v1/verifications/order-1"),
            httpx.post(f"{api.url}/v1/verifications/order-1/check", json={"code": "1234"}),
            httpx.post(f"{api.url}/v1/verifications/order-1/cancel"),
        ]

        assert [answer.status_code for answer in answers] == [401, 401, 401]


class TestCheck:
    def test_the_delivered_code_approves_the_verification(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        code = delivered_code(api_client, producer, sandbox, verification_id, phone)

        answer = check(api_client, verification_id, code)

        assert answer.status_code == 200
        assert (answer.json()["result"], answer.json()["status"]) == ("approved", "approved")
        assert producer.status(verification_id)["status"] == "approved"

    def test_a_wrong_code_is_rejected_with_200_and_the_attempts_left(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        code = delivered_code(api_client, producer, sandbox, verification_id, phone)

        answer = check(api_client, verification_id, wrong(code))

        assert answer.status_code == 200
        assert answer.json()["result"] == "rejected"
        assert answer.json()["attempts_left"] == 2

    def test_the_last_wrong_code_ends_the_verification_as_max_attempts(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        code = delivered_code(api_client, producer, sandbox, verification_id, phone)
        for _ in range(3):
            check(api_client, verification_id, wrong(code))

        answer = check(api_client, verification_id, code)

        assert reason_of(answer) == (409, "max_attempts")
        assert answer.json()["verification_status"] == "max_attempts"

    def test_a_check_of_an_unknown_id_is_404(self, api_client: httpx.Client, verification_id: str) -> None:
        assert reason_of(check(api_client, verification_id, "1234")) == (404, "not_found")

    def test_a_check_of_a_canceled_verification_is_409(
        self, api_client: httpx.Client, verification_id: str, phone: str
    ) -> None:
        start(api_client, verification_id, phone)
        api_client.post(f"/v1/verifications/{verification_id}/cancel")

        assert reason_of(check(api_client, verification_id, "1234")) == (409, "canceled")

    def test_a_check_the_library_refuses_is_400(self, api_client: httpx.Client, verification_id: str) -> None:
        answer = api_client.post(f"/v1/verifications/{verification_id}/check", json={"code": 1234})

        assert reason_of(answer) == (400, "invalid_request")

    def test_a_check_body_naming_another_id_is_refused(
        self, api_client: httpx.Client, verification_id: str
    ) -> None:
        answer = api_client.post(
            f"/v1/verifications/{verification_id}/check", json={"id": "someone-else", "code": "1234"}
        )

        assert reason_of(answer) == (400, "invalid_request")


class TestStatusAndCancel:
    def test_the_status_is_the_producer_contracts_status(
        self,
        api_client: httpx.Client,
        producer: Producer,
        sandbox: Sandbox,
        verification_id: str,
        phone: str,
    ) -> None:
        delivered_code(api_client, producer, sandbox, verification_id, phone)

        answer = api_client.get(f"/v1/verifications/{verification_id}")

        assert answer.status_code == 200
        assert answer.json() == producer.status(verification_id)
        assert answer.json()["phone"] != "+" + phone

    def test_the_status_of_an_unknown_id_is_404(self, api_client: httpx.Client, verification_id: str) -> None:
        assert reason_of(api_client.get(f"/v1/verifications/{verification_id}")) == (404, "not_found")

    def test_a_malformed_id_is_400(self, api_client: httpx.Client) -> None:
        assert reason_of(api_client.get("/v1/verifications/" + "x" * 200)) == (400, "invalid_request")

    def test_cancel_answers_the_canceled_status(
        self, api_client: httpx.Client, verification_id: str, phone: str
    ) -> None:
        start(api_client, verification_id, phone)

        answer = api_client.post(f"/v1/verifications/{verification_id}/cancel")

        assert (answer.status_code, answer.json()["status"]) == (200, "canceled")

    def test_cancel_of_an_unknown_id_is_404(self, api_client: httpx.Client, verification_id: str) -> None:
        answer = api_client.post(f"/v1/verifications/{verification_id}/cancel")

        assert reason_of(answer) == (404, "not_found")


class TestTheRest:
    def test_ready_names_the_library_version(self, api: Api) -> None:
        answer = httpx.get(f"{api.url}/ready")

        assert answer.status_code == 200
        assert int(answer.json()["library"]) >= 17

    def test_the_served_document_is_the_committed_one(self, api: Api) -> None:
        served = httpx.get(f"{api.url}/openapi.json").json()

        assert served == json.loads(COMMITTED_DOCUMENT.read_text(encoding="utf-8"))

    def test_a_method_a_path_does_not_take_is_405_with_allow(self, api_client: httpx.Client) -> None:
        answer = api_client.get("/v1/verifications")

        assert reason_of(answer) == (405, "method_not_allowed")
        assert answer.headers["allow"] == "POST"

    def test_a_path_the_api_does_not_have_is_404_no_such_path(self, api_client: httpx.Client) -> None:
        assert reason_of(api_client.get("/v2/verifications")) == (404, "no_such_path")

    def test_requests_are_counted_by_the_keys_name_operation_and_status(
        self, api: Api, api_client: httpx.Client, verification_id: str
    ) -> None:
        api_client.get(f"/v1/verifications/{verification_id}")

        metrics = httpx.get(api.metrics_url).text

        assert 'flashcall_api_requests_total{code="404",key="shop",operation="status"}' in metrics
        assert 'flashcall_api_request_seconds_count{operation="status"}' in metrics
