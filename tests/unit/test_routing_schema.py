"""docs/routing.schema.json is routing.yaml's schema as the code defines it, and the shipped
routing files satisfy it (so an editor using it agrees with `flashcall routing check`)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from worker.routing.config import json_schema

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_schema_is_the_one_the_code_generates() -> None:
    assert (ROOT / "docs" / "routing.schema.json").read_text(encoding="utf-8") == json_schema(), (
        "docs/routing.schema.json is out of date: flashcall routing schema > docs/routing.schema.json"
    )


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "routing.yaml",
        ROOT / "tests" / "routing.test.yaml",
        *sorted((ROOT / "docs" / "examples").glob("*.yaml")),
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_the_shipped_routing_files_satisfy_the_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), json.loads(json_schema()))


def test_the_schema_refuses_a_literal_credential() -> None:
    document = yaml.safe_load((ROOT / "routing.yaml").read_text(encoding="utf-8"))
    document["providers"]["voicepassword"]["credentials"]["api_key"] = "plain-text-key"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json.loads(json_schema()))
