"""The shape of the import graph of everything policyengine ships.

The modules are read with `ast`, never imported, so every import counts: those at
the top of a module, those inside functions (lazy imports) and those under
`if TYPE_CHECKING:`. The source trees are the folders `pyproject.toml` maps to
installed packages (`policyengine/`, `adapters/` -> `policyengine.adapters`,
`notifier/` -> `policyengine.notifier`); Alembic revision scripts are not modules
of the package and are left out.

Guarantees checked here:

* the graph between shipped modules has no cycle (a module never needs, directly or
  through others, a module that needs it);
* only the simulator and the demo themselves, and the CLI commands that start them,
  import `policyengine.simulate` or `policyengine.demo`;
* no shipped module imports pytest.
"""

from __future__ import annotations

import ast
import tomllib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Folders below a source tree whose .py files are not modules of the package.
NOT_MODULES = (Path("policyengine/store/migrations/versions"),)

# Test-and-demo packages: shipped, but no production module may depend on them.
DEMO_ONLY = ("policyengine.simulate", "policyengine.demo")
# The modules allowed to import them: themselves, and the CLI commands that run them.
DEMO_RUNNERS = ("policyengine.cli.demo_cmd", "policyengine.cli.dispatch_cmds")

TEST_ONLY = ("pytest", "_pytest")


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen from the module that holds it."""

    target: str  # absolute dotted name; a submodule when `from pkg import name` names one
    line: int


@dataclass(frozen=True)
class Module:
    """A shipped module: its dotted name, its file and whether it is a package `__init__`."""

    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT))


def source_trees() -> dict[str, Path]:
    """Installed package name -> the folder it is built from, as `pyproject.toml` maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in mapping.items()}


@cache
def shipped_modules() -> Mapping[str, Module]:
    """Every module of the source trees, by dotted name (a package by its own name)."""
    modules: dict[str, Module] = {}
    for package, folder in source_trees().items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(ROOT)
            if any(relative.is_relative_to(skipped) for skipped in NOT_MODULES):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules[name] = Module(name, path)
    assert modules, f"no modules found under {ROOT}: are the source trees in pyproject.toml?"
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from ... import` reads from."""
    if not node.level:
        assert node.module is not None
        return node.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    assert base, f"{module.where}:{node.lineno}: relative import goes above the top package"
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_in(module: Module, source: str) -> list[Import]:
    """Every import in `source` (the text of `module`), anywhere in its body, relative names resolved.

    `from pkg import name` targets `pkg.name` when that is a shipped module, else `pkg`.
    """
    modules = shipped_modules()
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=str(module.path))):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, node)
            for alias in node.names:
                submodule = f"{source_module}.{alias.name}"
                found.append(Import(submodule if submodule in modules else source_module, node.lineno))
    return found


def imports_of(module: Module) -> list[Import]:
    """Every import in the module's file (see `imports_in`)."""
    return imports_in(module, module.path.read_text())


def _shipped_owner(target: str) -> str | None:
    """The shipped module an import target executes last: itself, or its nearest shipped parent."""
    modules = shipped_modules()
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


@cache
def import_graph() -> Mapping[str, Mapping[str, int]]:
    """Module -> {shipped module it imports -> line of the first such import}; no self-edges."""
    graph: dict[str, dict[str, int]] = {}
    for name, module in shipped_modules().items():
        edges: dict[str, int] = {}
        for imp in imports_of(module):
            owner = _shipped_owner(imp.target)
            if owner is not None and owner != name:
                edges.setdefault(owner, imp.line)
        graph[name] = edges
    return graph


def strongly_connected(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), sorted.

    Two modules share a component exactly when each imports the other, directly or not.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    # Depth-first frames: a node and the successors not yet looked at.
    frames: list[tuple[str, Iterator[str]]] = []

    def enter(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        frames.append((node, iter(sorted(graph[node]))))

    for start in sorted(graph):
        if start in index:
            continue
        enter(start)
        while frames:
            node, successors = frames[-1]
            for succ in successors:
                if succ not in index:
                    enter(succ)
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:  # every successor done: close the frame
                frames.pop()
                if frames:
                    parent = frames[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: Mapping[str, Mapping[str, int]], component: list[str]) -> list[str]:
    """A shortest import chain from the component's first module back to it (first == last)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node]):
            if succ == start:
                path = [node]
                while (previous := came_from[path[-1]]) is not None:
                    path.append(previous)
                return [*reversed(path), start]
            if succ in members and succ not in came_from:
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"{component} is not strongly connected")


def describe_cycle(graph: Mapping[str, Mapping[str, int]], component: list[str]) -> str:
    """`a -> b -> a`, then each link with the file and line of the import that makes it."""
    modules = shipped_modules()
    chain = shortest_cycle(graph, component)
    lines = ["  " + " -> ".join(chain)]
    for importer, imported in pairwise(chain):
        lines.append(f"      {modules[importer].where}:{graph[importer][imported]} imports {imported}")
    others = [m for m in component if m not in chain]
    if others:
        lines.append(f"      (also tangled in the same knot: {', '.join(others)})")
    return "\n".join(lines)


def _is_within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_source_trees_are_found() -> None:
    """The walk sees all three trees (an empty walk would make the other tests pass vacuously)."""
    names = set(shipped_modules())
    for required in ("policyengine", "policyengine.adapters", "policyengine.notifier",
                     "policyengine.evaluator", "policyengine.approvals.service"):
        assert required in names, f"{required} is not among the walked modules"
    assert not any(".migrations.versions." in n for n in names)


def test_resolution_of_relative_and_from_imports() -> None:
    """Relative imports resolve against the importer's package; `from pkg import submodule`
    targets the submodule, `from pkg import name` the package; lazy and TYPE_CHECKING imports count."""
    service = shipped_modules()["policyengine.approvals.service"]
    package = shipped_modules()["policyengine.approvals"]
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import tables\n"
        "from .tables import new_id\n"
        "from .. import types\n"
        "from ..store import make_sync_engine\n"
        "if TYPE_CHECKING:\n"
        "    from policyengine.notifier import email\n"
        "def f():\n"
        "    import policyengine.dsl.conditions as c\n"
    )
    assert [i.target for i in imports_in(service, source)] == [
        "typing", "policyengine.approvals.tables", "policyengine.approvals.tables", "policyengine.types",
        "policyengine.store", "policyengine.notifier.email", "policyengine.dsl.conditions",
    ]
    assert [i.target for i in imports_in(package, "from . import service\nfrom .. import fastmodel\n")] == [
        "policyengine.approvals.service", "policyengine.fastmodel",
    ]
    assert _shipped_owner("policyengine.store.make_sync_engine") == "policyengine.store"
    assert _shipped_owner("sqlalchemy.orm") is None


def test_cycle_finder_reports_each_cycle_as_a_chain() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"f": 5}, "f": {"e": 6}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e", "f"]]
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert shortest_cycle(graph, ["e", "f"]) == ["e", "f", "e"]
    assert strongly_connected({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles() -> None:
    """No shipped module imports, directly or through others, a module that imports it."""
    graph = import_graph()
    components = strongly_connected(graph)
    assert not components, (
        f"{len(components)} import cycle(s) among the shipped modules (lazy and TYPE_CHECKING "
        "imports count; move the shared piece into a module both sides import, or pass it in):\n"
        + "\n".join(describe_cycle(graph, c) for c in components)
    )


def test_only_the_demo_and_its_commands_import_the_simulator_or_the_demo() -> None:
    """Production code never depends on the simulated fleet or the demo."""
    allowed = (*DEMO_ONLY, *DEMO_RUNNERS)
    offenders = [
        f"  {module.where}:{imp.line} imports {imp.target}"
        for name, module in shipped_modules().items()
        if not _is_within(name, allowed)
        for imp in imports_of(module)
        if _is_within(imp.target, DEMO_ONLY)
    ]
    assert not offenders, (
        f"only {', '.join(allowed)} may import {' or '.join(DEMO_ONLY)}:\n" + "\n".join(offenders)
    )


def test_no_shipped_module_imports_pytest() -> None:
    """pytest is a test dependency: nothing installed with policyengine may import it."""
    offenders = [
        f"  {module.where}:{imp.line} imports {imp.target}"
        for module in shipped_modules().values()
        for imp in imports_of(module)
        if _is_within(imp.target, TEST_ONLY)
    ]
    assert not offenders, "shipped modules import pytest (keep fixtures under tests/):\n" + "\n".join(offenders)
