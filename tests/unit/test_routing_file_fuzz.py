"""Routing files, fuzzed: `load_routing` either returns a config or raises a ConfigurationError
whose message names the file, whatever the file holds.

The files are the shipped examples (docs/examples/*.yaml and routing.yaml) mutated at
random, in their parsed structure or in their text, random YAML documents, and bytes that
are not text at all. Nothing else may escape: no TypeError from a validator, no
RecursionError from a parser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.errors import ConfigurationError
from worker.routing.config import RoutingConfig, load_routing

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = [
    path.read_text(encoding="utf-8")
    for path in [*sorted((REPOSITORY / "docs" / "examples").glob("*.yaml")), REPOSITORY / "routing.yaml"]
]

FUZZ = settings(max_examples=200, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats()
    | st.text(max_size=15)
    | st.sampled_from(
        [
            *("30s", "500ms", "-1s", "0", "1e999", "nan", "env:X", "env:", "https://x", "7900"),
            *("flashcall", "voice", "sms", "fax", "voicepassword", "telphin", "gateway", "mobilgroup"),
            *("default", "busy"),
        ]
    )
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(scalars, inner, max_size=3),
    max_leaves=8,
)


#: Text that YAML reads in special ways: structure, anchors, tags, dates, huge numbers.
YAML_SNIPPETS = [
    *(": ", "- ", "\t", "  ", "{", "[", "&a ", "*a", "!!", "? ", "---\n", "%YAML 1.1\n"),
    *("!!int x", "!!float x", "!!timestamp x", "!!binary x", "2026-13-45", "9" * 5000),
]


def _places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value in a parsed document."""
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _places(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _places(child, (*path, index))


@st.composite
def structural_mutations(draw: st.DrawFn) -> str:
    """An example with 1 to 3 values replaced, removed, or given an unknown sibling."""
    document: Any = copy.deepcopy(yaml.safe_load(draw(st.sampled_from(EXAMPLES))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_places(document))))
        if not path:
            document = draw(values)
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "remove", "add a sibling"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(scalars)] = draw(values)
        else:
            parent.append(draw(values))
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@st.composite
def text_mutations(draw: st.DrawFn) -> str:
    """An example with a slice of its text cut out, or replaced with other text, or with the
    value of one of its `key: value` lines written otherwise."""
    text = draw(st.sampled_from(EXAMPLES))
    if draw(st.booleans()):
        lines = text.splitlines()
        keyed = [
            index for index, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")
        ]
        index = draw(st.sampled_from(keyed))
        key = lines[index].split(": ", 1)[0]
        lines[index] = f"{key}: {draw(st.sampled_from(YAML_SNIPPETS) | st.text(max_size=10))}"
        return "\n".join(lines)
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 40)))
    inserted = draw(st.text(max_size=10) | st.sampled_from(YAML_SNIPPETS))
    return text[:start] + inserted + text[end:]


# Past a few hundred levels PyYAML's parser runs out of stack; "[" costs it quadratic time.
deep_documents = st.builds(
    lambda opening, depth: opening * depth, st.sampled_from(["[", "{a: ", "- "]), st.integers(1, 1200)
)


@pytest.fixture(scope="module")
def routing_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routing-fuzz") / "routing.yaml"


def load(path: Path, content: str | bytes) -> RoutingConfig | ConfigurationError:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        return load_routing(path, environ={})
    except ConfigurationError as error:
        return error


def assert_config_or_clear_error(path: Path, loaded: RoutingConfig | ConfigurationError) -> None:
    if isinstance(loaded, ConfigurationError):
        assert str(loaded).startswith(f"{path}"), f"the error does not name the file: {loaded}"
        assert len(str(loaded)) > len(f"{path}:1: ")


@FUZZ
@given(content=structural_mutations())
def test_an_example_with_values_changed_loads_or_is_refused_naming_the_file(
    routing_file: Path, content: str
) -> None:
    assert_config_or_clear_error(routing_file, load(routing_file, content))


@FUZZ
@given(content=text_mutations())
def test_an_example_with_its_text_damaged_loads_or_is_refused_naming_the_file(
    routing_file: Path, content: str
) -> None:
    assert_config_or_clear_error(routing_file, load(routing_file, content))


@FUZZ
@given(content=values.map(lambda document: yaml.safe_dump(document, allow_unicode=True, sort_keys=False)))
def test_any_yaml_document_loads_or_is_refused_naming_the_file(routing_file: Path, content: str) -> None:
    assert_config_or_clear_error(routing_file, load(routing_file, content))


@settings(FUZZ, max_examples=40)
@given(content=deep_documents)
def test_a_deeply_nested_document_is_refused_naming_the_file(routing_file: Path, content: str) -> None:
    loaded = load(routing_file, content)
    assert isinstance(loaded, ConfigurationError)
    assert_config_or_clear_error(routing_file, loaded)


@FUZZ
@given(content=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_load_or_are_refused_naming_the_file(routing_file: Path, content: str | bytes) -> None:
    assert_config_or_clear_error(routing_file, load(routing_file, content))
