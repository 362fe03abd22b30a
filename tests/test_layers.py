"""The package's layers, checked on the source: who may import what.

Every import counts, also one inside a function or under `TYPE_CHECKING`: a cycle hidden
that way is still a cycle in the design. The rules (README, "Layout"):

* no import cycles among the gateway's modules;
* the layers, lowest first: the shared base (`errors`, `constants`, `logging`,
  `event_loop`), `protocol` and `text`, `stats`, `outcomes`, `control`, `session` and
  `health`, `config`, `analysis`, `stores` and `emulator`, `server`, `tools`, `cli`; a
  module imports only from its own package or from lower layers, so protocol < session <
  server;
* only `stores/` imports redis, the analysis engines (duckdb, clickhouse_connect, chdb) and
  Azure Blob Storage; only `server/`, `emulator/` and `tools/` import aiohttp;
* only `cli.py` imports `tools/`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT

PACKAGE = ROOT / "gateway"

# Each top-level part of the package and its layer; equal layers may not import each other.
LAYERS: dict[str, int] = {
    "errors": 0,
    "constants": 0,
    "logging": 0,
    "event_loop": 0,
    "protocol": 1,
    "text": 1,
    "stats": 2,
    "outcomes": 3,
    "control": 4,
    "session": 5,
    "health": 5,
    "config": 6,
    "analysis": 7,
    "stores": 8,
    "emulator": 8,
    "server": 9,
    "tools": 10,
    "cli": 11,
    "__main__": 12,
}
# Third-party packages that only some parts may import.
RESTRICTED: dict[str, frozenset[str]] = {
    "redis": frozenset({"stores"}),
    "duckdb": frozenset({"stores"}),
    "clickhouse_connect": frozenset({"stores"}),
    "chdb": frozenset({"stores"}),
    "azure": frozenset({"stores", "tools"}),  # azure.storage in stores, the Speech SDK in tools
    "aiohttp": frozenset({"server", "emulator", "tools"}),
}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a gateway module) or a top-level distribution
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(known: dict[str, Path]) -> Iterator[Import]:
    """Every import statement of every module, resolved to a gateway module where it names
    one (`from gateway.x import y` is `gateway.x.y` when that is a module)."""
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    yield Import(name, child if child in known else base, node.lineno)


def part(module: str) -> str:
    """The top-level part of the package a gateway module belongs to."""
    return module.split(".")[1] if module.count(".") else module


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    known = modules()
    return known, list(imports(known))


def test_every_part_of_the_package_has_a_layer(graph: tuple[dict[str, Path], list[Import]]) -> None:
    known, _ = graph
    unplaced = sorted({part(name) for name in known if name != "gateway"} - set(LAYERS))
    assert not unplaced, f"add these to LAYERS (and README's layout): {unplaced}"


def test_layers_import_only_downwards(graph: tuple[dict[str, Path], list[Import]]) -> None:
    known, found = graph
    wrong = []
    for imp in found:
        if imp.imported not in known or imp.imported == "gateway":
            continue
        here, there = part(imp.importer), part(imp.imported)
        if here != there and LAYERS[here] <= LAYERS[there]:
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.imported}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("distribution", sorted(RESTRICTED))
def test_restricted_libraries(
    graph: tuple[dict[str, Path], list[Import]], distribution: str
) -> None:
    _, found = graph
    allowed = RESTRICTED[distribution]
    wrong = [
        f"{imp.importer}:{imp.line}"
        for imp in found
        if imp.imported.split(".")[0] == distribution and part(imp.importer) not in allowed
    ]
    assert not wrong, f"only {sorted(allowed)} may import {distribution}: {wrong}"


def test_only_the_cli_imports_the_tools(graph: tuple[dict[str, Path], list[Import]]) -> None:
    _, found = graph
    wrong = [
        f"{imp.importer}:{imp.line}"
        for imp in found
        if imp.imported.startswith("gateway.tools") and part(imp.importer) not in {"tools", "cli"}
    ]
    assert not wrong, f"gateway.tools is imported outside cli.py: {wrong}"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or with a self-import
    (Tarjan's algorithm, iterative so that a deep package cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_cycles_finds_a_cycle() -> None:
    """The checker itself: a cycle of three and a self-import are found, a chain is not."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles(graph: tuple[dict[str, Path], list[Import]]) -> None:
    known, found = graph
    edges: dict[str, set[str]] = {name: set() for name in known}
    for imp in found:
        if imp.imported in known and imp.imported != imp.importer:
            edges[imp.importer].add(imp.imported)
    assert cycles(edges) == []
