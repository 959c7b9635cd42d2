"""The API against its own OpenAPI document: schemathesis generates requests from the
document /openapi.json serves and sends them to a running `flashcall api` (the session's
Redis, worker and sandbox), then holds every answer to the document: its status, headers,
content type and body, and that it takes what the document calls valid and refuses the rest.

A few rules are the deployment's or span two places of a request, which JSON Schema cannot
state and the document says in words: a start's id is in its body or its Idempotency-Key
header (the same in both), a check's body id is its URL's, a policy is one of routing.yaml's.
Valid requests are made to keep them before they are sent. Every start calls a number of its
own, so that the sandbox's calls to numbers other tests watch are theirs alone.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.conftest import TEST_ROUTING
from tests.support import Api
from worker.api.openapi import document

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
]

OPERATIONS = [
    operation["operationId"] for path in document()["paths"].values() for operation in path.values()
]
POLICIES = sorted(yaml.safe_load(TEST_ROUTING.read_text(encoding="utf-8"))["policies"])
PHONE = re.compile(document()["components"]["schemas"]["StartRequest"]["properties"]["phone"]["pattern"])

_ids = itertools.count()


@pytest.fixture(scope="module")
def api_schema(api: Api) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=10)


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=api.url, timeout=10)
    yield client
    client.close()


def keep_to_the_words(case: Case, new_phone: Callable[[], str]) -> None:
    """Make a generated request keep what the document says in words."""
    body = case.body if isinstance(case.body, dict) else None
    mode = case.meta.generation.mode if case.meta is not None else GenerationMode.POSITIVE
    if case.operation.definition.raw.get("operationId") == "startVerification" and body is not None:
        if isinstance(body.get("phone"), str) and PHONE.match(body["phone"]):
            body["phone"] = "+" + new_phone()
        if mode.is_positive:
            headers = case.headers if case.headers is not None else {}
            if "id" in body and headers.pop("Idempotency-Key", body["id"]) != body["id"]:
                case.headers = headers
            elif "id" not in body and "Idempotency-Key" not in headers:
                body["id"] = f"schema-{next(_ids)}-{secrets.token_hex(3)}"
            if body.get("policy", "default") not in POLICIES:
                body["policy"] = "default"
    if case.operation.path.endswith("/check") and mode.is_positive and body is not None and "id" in body:
        body["id"] = case.path_parameters["id"]


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_the_api_answers_what_its_document_says(
    api_schema: OpenApiSchema, api: Api, http: httpx.Client, new_phone: Callable[[], str], operation_id: str
) -> None:
    # A verification the generated requests name beside ids nobody started, so that a status,
    # a check and a cancellation answer a real one too.
    live = f"schema-{operation_id}-{secrets.token_hex(4)}"
    started = http.post(
        "/v1/verifications",
        json={"id": live, "phone": "+" + new_phone()},
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert started.status_code == 201, started.text
    operation = api_schema.find_operation_by_id(operation_id)
    strategies: list[st.SearchStrategy[Case]] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(mode))
        if "{id}" in operation.path:
            strategies.append(operation.as_strategy(mode, path_parameters={"id": live}))

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def answers_as_documented(case: Case) -> None:
        keep_to_the_words(case, new_phone)
        case.call_and_validate(
            base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}, checks=CHECKS, timeout=15
        )

    answers_as_documented()
