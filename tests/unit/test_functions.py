"""worker/redis/functions.py has one wrapper per function of worker/redis/flashcall.lua, and
nothing else calls the library: no FCALL, and no function's name, outside that module.

A function's name and the order of its arguments are then written once: a change to the
library's list fails here until the wrappers follow it, and a raw FCALL anywhere fails
here naming its file and line. The tests that send the library what no wrapper would
(fuzzed bytes, an argument too many) are ALLOWED, by name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from worker.redis import functions
from worker.redis.library import library_source

ROOT = Path(__file__).resolve().parents[2]
WRAPPERS = ROOT / "worker" / "redis" / "functions.py"
SCANNED = ("worker", "flashcall_dev", "bench", "tests")
#: The client methods that send FCALL and FCALL_RO.
RAW = ("fcall", "fcall_ro")

#: (file, function) where a raw FCALL is the point of the test.
ALLOWED = frozenset(
    {
        ("tests/integration/test_fuzz_inputs.py", "call"),
        ("tests/integration/test_library.py", "TestStatusAndCancel.test_extra_arguments_are_refused"),
    }
)

_REGISTERED = re.compile(
    r"^redis\.register_function(?:\('(?P<plain>\w+)'|\{function_name = '(?P<flagged>\w+)')", re.MULTILINE
)


def registered() -> list[str]:
    """The functions flashcall.lua registers, in its order."""
    return [found["plain"] or found["flagged"] for found in _REGISTERED.finditer(library_source())]


def wrapped() -> dict[str, list[str]]:
    """Each function name functions.py calls, with the wrappers that call it."""
    by_name: dict[str, list[str]] = {}
    for node in ast.parse(WRAPPERS.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for inner in ast.walk(node):
            if (
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Name)
                and inner.func.id == "Call"
                and isinstance(inner.args[0], ast.Constant)
            ):
                by_name.setdefault(str(inner.args[0].value), []).append(node.name)
    return by_name


def test_the_library_registers_its_functions_where_this_test_finds_them() -> None:
    assert len(registered()) == library_source().count("redis.register_function") == 28


def test_every_registered_function_has_exactly_one_wrapper_and_every_wrapper_a_function() -> None:
    assert sorted(wrapped()) == sorted(registered())
    assert {name: owners for name, owners in wrapped().items() if len(owners) != 1} == {}


def test_each_wrapper_is_named_after_its_function_and_exported() -> None:
    owners = {name: owner for name, [owner, *_] in wrapped().items()}
    assert {name: owner for name, owner in owners.items() if name != f"flashcall_{owner}"} == {}
    assert set(owners.values()) <= set(functions.__all__)


def _scanned_files() -> Iterator[str]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix()


def raw_calls(node: ast.AST, names: frozenset[str], scope: str = "") -> Iterator[tuple[int, str, str]]:
    """(line, enclosing class or function, what) of each FCALL sent by hand and each library
    function's name spelled; a decorator counts as inside what it decorates."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        scope = f"{scope}.{node.name}" if scope else node.name
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RAW:
        yield node.lineno, scope, f".{node.func.attr}(...)"
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
        yield node.lineno, scope, repr(node.value)
    for child in ast.iter_child_nodes(node):
        yield from raw_calls(child, names, scope)


def _found(relative: str) -> list[tuple[int, str, str]]:
    return list(raw_calls(ast.parse((ROOT / relative).read_text(encoding="utf-8")), frozenset(registered())))


def test_nothing_but_the_wrappers_sends_fcall_or_names_a_library_function() -> None:
    outside = [
        f"{relative}:{line} ({scope or 'module'}): {what}"
        for relative in _scanned_files()
        if ROOT / relative != WRAPPERS
        for line, scope, what in _found(relative)
        if (relative, scope) not in ALLOWED
    ]
    assert outside == [], "call the library through worker/redis/functions.py"


def test_the_allowed_raw_calls_are_still_there() -> None:
    present = {(relative, scope) for relative, _ in ALLOWED for _, scope, _ in _found(relative)}
    assert present >= ALLOWED
