"""The package's import graph: no cycle, and nothing but the CLI itself imports ``accelport.cli``.

Every import counts, also those inside functions (a deferred import is still a dependency). Pure AST, no import.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "accelport"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The accelport modules ``path`` imports (``from .x import y`` counts as ``.x.y`` when that is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its modules; an edge from a module to its own package's ``__init__``
    (``from . import x``) is the package, not a cycle of modules."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


# Known before issue 10's job spec, in files other branches own (runners/, simdevice/): devices -> simdevice (the
# simulated NPU) -> simdevice.build -> runners.cache (cache folder) -> environment -> devices. Remove when broken.
KNOWN_CYCLES: list[list[str]] = []


def test_the_import_graph_has_no_cycle():
    assert cycles(_without_package_inits(import_graph())) == KNOWN_CYCLES


def test_a_cycle_is_found_when_there_is_one():  # the checker itself: a graph with a known cycle
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_the_cli():
    graph = import_graph()
    assert sorted(m for m, deps in graph.items() if "accelport.cli" in deps and m != "accelport.__main__") == []


def test_lower_layers_never_import_a_command():
    graph = import_graph()
    commands = ("accelport.main_job", "accelport.bench", "accelport.layers", "accelport.evaluation",
                "accelport.power", "accelport.zoo")
    job = {m: deps for m, deps in graph.items() if m.startswith("accelport.job")}
    assert {m: sorted(d for d in deps if d.startswith(commands)) for m, deps in job.items()} == {m: [] for m in job}
    layers = {m: deps for m, deps in graph.items() if m.startswith("accelport.layers")}
    assert not any(d.startswith("accelport.main_job") for deps in layers.values() for d in deps)
    bench = {m: deps for m, deps in graph.items() if m.startswith("accelport.bench")}
    assert not any(d.startswith("accelport.main_job") for deps in bench.values() for d in deps)
