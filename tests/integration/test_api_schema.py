"""The API against its own OpenAPI document: schemathesis generates requests from the
document /openapi.json serves and sends them to a running `flashcall api` (the session's
Redis, worker and sandbox), then holds every answer to the document: its status, headers,
content type and body, and that it takes what the document calls valid and refuses the rest.

A few rules are the deployment's or span two places of a request, which JSON Schema cannot
state and the document says in words: a start's id is in its body or its Idempotency-Key
header (the same in both), a check's body id is its URL's, a policy is one of routing.yaml's,
metadata is at most 1024 bytes once encoded. Generated requests are brought in line with them
before they are sent. Every start calls a number of its
own and names its id under `schema-`, so that nothing another test of the session watches is
touched; the document's example id stands for a verification this module started, so that
status, check and cancel answer a real one too.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from requests.structures import CaseInsensitiveDict
from schemathesis import APIOperation
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.generation.feedback import FeedbackSources

# schemathesis' own loader of a schema from a fixture (schemathesis.pytest.from_fixture) fails
# on pytest 9.2, which has no Node._nodeid: this builds the test of one operation as it does
# (examples, coverage and fuzzing phases), without renaming pytest's node.
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.conftest import TEST_ROUTING
from tests.support import API_KEY, Api, OwnStack
from worker.api.openapi import document
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.redis.library import install

pytestmark = pytest.mark.integration

Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    ignored_auth,
    unsupported_method,
    allow_header_conformance,
]

#: Generated requests per operation in the fuzzing phase (the coverage phase adds its own).
EXAMPLES = 100

OPERATIONS = [
    operation["operationId"] for path in document()["paths"].values() for operation in path.values()
]
POLICIES = sorted(yaml.safe_load(TEST_ROUTING.read_text(encoding="utf-8"))["policies"])
_SCHEMAS = document()["components"]["schemas"]
PHONE = re.compile(_SCHEMAS["StartRequest"]["properties"]["phone"]["pattern"])
ID = re.compile(_SCHEMAS["StartRequest"]["properties"]["id"]["pattern"])
POLICY = re.compile(_SCHEMAS["StartRequest"]["properties"]["policy"]["pattern"])
#: The library's limit on a start's metadata (MAX_METADATA_BYTES in flashcall.lua).
MAX_METADATA_BYTES = 1024
EXAMPLE_ID = _SCHEMAS["StartRequest"]["properties"]["id"]["examples"][0]


@pytest.fixture(scope="module")
def api_schema(api: Api) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=10)


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 128 and ID.fullmatch(value) is not None


def _encoded_size(metadata: dict[str, Any]) -> int:
    """At least the size the library finds once it encodes the metadata again, with the key's
    name the API adds: cjson writes '/' as two bytes, and numbers no longer than Python does."""
    encoded = json.dumps({**metadata, "api_key": "shop"}, ensure_ascii=False, separators=(",", ":"))
    return len(encoded.encode("utf-8", "surrogatepass")) + encoded.count("/")


def _own_id(value: Any) -> Any:
    """A valid id under `schema-`: the same generated id still names the same verification."""
    return f"schema-{value}"[:128] if _valid_id(value) else value


def keep_to_the_words(case: Case, phone_for: Callable[[str], str], live: str) -> None:
    """Make a generated request keep what the document says in words, and this module's own.

    Only values the document calls valid are changed, and only into others it calls valid:
    a request generated invalid stays invalid."""
    # Copies: the coverage phase shares one body among the cases it derives from it.
    body: dict[str, Any] | None = dict(case.body) if isinstance(case.body, dict) else None
    if case.path_parameters and case.path_parameters.get("id") == EXAMPLE_ID:
        case.path_parameters = {**case.path_parameters, "id": live}
    if case.operation.path == "/v1/verifications":
        headers = CaseInsensitiveDict(case.headers)
        key = headers.get("Idempotency-Key")
        if key is not None:
            key = _own_id(key)
            headers["Idempotency-Key"] = key
        if body is not None:
            if isinstance(body.get("phone"), str) and PHONE.match(body["phone"]):
                body["phone"] = phone_for(body["phone"])
            if "id" in body:
                body["id"] = _own_id(body["id"])
                if _valid_id(body["id"]) and _valid_id(key) and key != body["id"]:
                    del headers["Idempotency-Key"]
            elif key is None:
                body["id"] = f"schema-{secrets.token_hex(4)}"
            if (
                isinstance(body.get("metadata"), dict)
                and _encoded_size(body["metadata"]) > MAX_METADATA_BYTES
            ):
                del body["metadata"]
            policy = body.get("policy")
            if isinstance(policy, str) and POLICY.fullmatch(policy) and policy not in POLICIES:
                body["policy"] = "default"
        case.headers = headers
    elif body is not None and _valid_id(body.get("id")):
        body["id"] = case.path_parameters["id"]
    if body is not None:
        case.body = body


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_the_api_answers_what_its_document_says(
    api_schema: OpenApiSchema,
    api: Api,
    api_client: httpx.Client,
    new_phone: Callable[[], str],
    operation_id: str,
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)
    live = f"schema-{operation_id}-{secrets.token_hex(4)}"
    if "{id}" in operation.path:
        started = api_client.post("/v1/verifications", json={"id": live, "phone": "+" + new_phone()})
        assert started.status_code == 201, started.text

    # One number of the session's own for each number generated: a request sent again is the
    # same request, and answers as a repeated one does.
    phones: dict[str, str] = {}

    def phone_for(generated: str) -> str:
        national = re.sub(r"[^0-9]", "", generated)[-10:]
        if national not in phones:
            phones[national] = "+" + new_phone()
        return phones[national]

    def answers_as_documented(case: Case) -> None:
        keep_to_the_words(case, phone_for, live)
        case.call_and_validate(
            base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}, checks=CHECKS, timeout=15
        )

    test = build_operation_test(
        config=api_schema.config,
        operation=operation,
        test_func=answers_as_documented,
        given_kwargs={},
        feedback=FeedbackSources(),
        explicit_settings=settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    test()


#: What a request of each operation that takes a key sends besides the key, valid by the document.
REQUESTS: dict[str, dict[str, Any]] = {
    "startVerification": {"body": {"id": "schema-unauthorized", "phone": "+79990000000"}},
    "getVerification": {"path_parameters": {"id": "schema-unauthorized"}},
    "checkVerification": {"path_parameters": {"id": "schema-unauthorized"}, "body": {"code": "4567"}},
    "cancelVerification": {"path_parameters": {"id": "schema-unauthorized"}},
}
DOCUMENTED_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("operation_id", list(REQUESTS))
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-key-of-this-api-0123456789abcdef", f"Basic {API_KEY}", "Bearer"],
    ids=["no key", "an unknown key", "another scheme", "no token"],
)
def test_a_request_without_a_valid_key_answers_401_as_documented(
    api_schema: OpenApiSchema,
    api: Api,
    api_client: httpx.Client,
    operation_id: str,
    authorization: str | None,
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)
    case = operation.Case(**REQUESTS[operation_id])
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = case.call(base_url=api.url, headers=headers, timeout=10)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == ["application/problem+json"]
    assert answer.headers["www-authenticate"] == ['Bearer realm="flashcall"']
    assert answer.json()["reason"] == "unauthorized"
    case.validate_response(answer, checks=DOCUMENTED_CHECKS)
    # Nothing was taken: no verification of that id exists.
    assert api_client.get("/v1/verifications/schema-unauthorized").status_code == 404


def test_a_body_over_the_librarys_limit_answers_413_as_documented(
    api_schema: OpenApiSchema, api: Api, api_client: httpx.Client, phone: str
) -> None:
    operation = api_schema.find_operation_by_id("startVerification")
    case = operation.Case(
        body={"id": "schema-too-large", "phone": "+" + phone, "metadata": {"note": "x" * 5000}}
    )
    answer = case.call(base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}, timeout=10)

    assert answer.status_code == 413
    assert answer.json()["reason"] == "too_large"
    case.validate_response(answer, checks=DOCUMENTED_CHECKS)
    assert api_client.get("/v1/verifications/schema-too-large").status_code == 404


def test_refusals_and_an_absent_library_answer_as_documented(
    api_schema: OpenApiSchema, own_stack: OwnStack
) -> None:
    """What the session's stack never answers (its limits admit every start, it blocks no
    number, its library is installed, its worker answers every check), on a stack of its own
    without a worker: first no library, then one start a minute per number and a blocked one."""
    with own_stack(TEST_ROUTING.read_text(encoding="utf-8")) as stack:
        _, url = stack.start_api(keys=f"shop:{API_KEY}", args=["--check-timeout", "0.5"])
        key = {"Authorization": f"Bearer {API_KEY}"}

        def answer(operation_id: str, **request: Any) -> schemathesis.Response:
            case = api_schema.find_operation_by_id(operation_id).Case(**request)
            response = case.call(base_url=url, headers=key, timeout=10)
            case.validate_response(response, checks=DOCUMENTED_CHECKS)
            return response

        absent = answer("startVerification", body={"id": "schema-early", "phone": "+79990000001"})
        assert (absent.status_code, absent.headers["retry-after"]) == (503, ["5"])
        assert answer("ready").status_code == 503

        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        install(client)
        functions.publish_config(
            PublishedConfig(
                policies=tuple(POLICIES), per_phone=((1, 60_000),), lists={"79990000002": "blocked"}
            )
        ).run(client)
        client.close()

        assert answer("ready").status_code == 200
        first = answer("startVerification", body={"id": "schema-first", "phone": "+79990000001"})
        assert first.status_code == 201
        unanswered = answer(
            "checkVerification", path_parameters={"id": "schema-first"}, body={"code": "4567"}
        )
        assert (unanswered.status_code, unanswered.json()["reason"]) == (504, "check_timeout")
        limited = answer("startVerification", body={"id": "schema-second", "phone": "+79990000001"})
        assert limited.status_code == 429
        assert limited.json()["reason"] == "rate_limited"
        repeated = answer("startVerification", body={"id": "schema-second", "phone": "+79990000001"})
        assert (repeated.status_code, repeated.json()["reason"]) == (409, "refused_id")
        refused = answer("getVerification", path_parameters={"id": "schema-second"})
        assert (refused.status_code, refused.json()["status"]) == (200, "failed")
        blocked = answer("startVerification", body={"id": "schema-blocked", "phone": "+79990000002"})
        assert (blocked.status_code, blocked.json()["reason"]) == (403, "blocked")
