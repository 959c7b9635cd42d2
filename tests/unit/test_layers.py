"""worker/'s folders are layers: a module imports only from its own layer and the layers
below it, and no modules of worker import each other in a circle.

The order is written once, in LAYERS; docs/architecture.md draws it ("Layers"). Every
import counts, at module level or inside a function, and those under TYPE_CHECKING too:
a type taken from a layer above ties the lower layer to it all the same (that is how
providers/__init__.py and routing/config.py once imported each other).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worker"
DEV_PACKAGE = "flashcall_dev"

#: Lowest first: (name, the modules and packages it holds).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("worker.core",)),
    ("logs", ("worker.logs",)),
    ("redis", ("worker.redis",)),
    ("client", ("worker.client",)),
    ("providers", ("worker.providers",)),
    ("routing", ("worker.routing",)),
    ("verification", ("worker.verification",)),
    ("process", ("worker.process",)),
    ("entry points", ("worker.callbacks", "worker.api", "worker.actors", "worker.cli", "worker.__main__")),
)


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    """The module imported (`from a.b import c` imports a.b.c where that is a module)."""
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Mapping[str, Path] = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, tree: ast.AST) -> Iterator[Import]:
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(inner) for function in functions for inner in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            named = [f"{base}.{alias.name}" for alias in node.names]
            targets = [target if target in MODULES else base for target in named]
        else:
            continue
        for target in targets:
            yield Import(target, node.lineno, id(node) in nested)


IMPORTS: Mapping[str, tuple[Import, ...]] = {
    name: tuple(_imports(name, ast.parse(path.read_text(encoding="utf-8")))) for name, path in MODULES.items()
}


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        if any(module == member or module.startswith(member + ".") for member in members):
            return index
    return None


def internal(name: str) -> list[Import]:
    """What a module imports of worker itself."""
    return [found for found in IMPORTS[name] if found.module in MODULES and found.module != name]


def test_every_module_of_worker_belongs_to_a_layer() -> None:
    outside = [name for name in MODULES if name != "worker" and layer_of(name) is None]
    assert outside == [], "add these to a layer of LAYERS (and to docs/architecture.md)"


def test_the_package_root_imports_nothing_of_its_own() -> None:
    assert internal("worker") == []


def test_no_layer_imports_a_layer_above_it() -> None:
    upward = []
    for name in MODULES:
        own = layer_of(name)
        for found in internal(name):
            theirs = layer_of(found.module)
            if own is not None and theirs is not None and theirs > own:
                upward.append(
                    f"{name}:{found.line} ({LAYERS[own][0]}) imports {found.module} ({LAYERS[theirs][0]})"
                )
    assert upward == []


def test_no_modules_of_worker_import_each_other_in_a_circle() -> None:
    graph = {name: {found.module for found in internal(name)} for name in MODULES}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail("import circle: " + " -> ".join(error.args[1]))


def test_the_product_imports_the_dev_tools_only_inside_the_commands_that_run_them() -> None:
    found = {
        (name, found.in_function)
        for name, imports in IMPORTS.items()
        for found in imports
        if found.module == DEV_PACKAGE or found.module.startswith(DEV_PACKAGE + ".")
    }
    assert found == {("worker.cli", True)}


def test_the_architecture_page_draws_the_layers_in_this_order() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    picture = page.split("## Layers", 1)[1].split("```", 2)[1]
    drawn = re.findall(r"^ [│▼] (\S.*?)\s{2,}worker/", picture, re.MULTILINE)
    assert drawn == [name for name, _ in reversed(LAYERS)]
