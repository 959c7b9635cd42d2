"""The API's OpenAPI document: what /openapi.json serves is what docs/ commits, and it names
every problem the API answers (tests/integration/test_api_schema.py runs it against the API)."""

from __future__ import annotations

import json
from pathlib import Path

from worker.api.openapi import document
from worker.api.problems import REASONS

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_document_is_the_one_the_api_serves() -> None:
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == document(), (
        "regenerate docs/openapi.json: python -c 'import json; from worker.api.openapi import document; "
        "print(json.dumps(document(), indent=2, ensure_ascii=False))' > docs/openapi.json"
    )


def test_the_document_is_openapi_3_1() -> None:
    assert document()["openapi"] == "3.1.0"


def test_every_operation_with_a_key_documents_the_problems_every_request_can_get() -> None:
    for path in document()["paths"].values():
        for operation in path.values():
            if operation.get("security") != []:
                assert {"400", "401", "500", "503"} <= set(operation["responses"]), operation["operationId"]


def test_the_keyless_paths_are_documented_as_such() -> None:
    keyless = {
        path
        for path, methods in document()["paths"].items()
        for operation in methods.values()
        if operation.get("security") == []
    }
    assert keyless == {"/health", "/ready", "/openapi.json"}


def test_every_reason_but_the_routers_own_is_documented_on_some_operation() -> None:
    documented = {
        reason
        for path in document()["paths"].values()
        for operation in path.values()
        for response in operation["responses"].values()
        for reason in REASONS
        if f"`{reason}`" in response["description"]
    }
    # A method a path does not take, and a path the API does not have, are answered by the
    # router, outside any operation.
    assert documented == set(REASONS) - {"method_not_allowed", "no_such_path"}
