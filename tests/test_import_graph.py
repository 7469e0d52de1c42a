"""The module import graphs of ``edgemed`` and of ``edgemed_runtime`` have no cycle.

Built from the source files (no import is executed): every ``import`` / ``from ... import``
anywhere in a module, inside functions too, relative imports resolved; importing ``a.b.c`` also
imports the packages ``a.b`` and ``a``. Not counted: imports under ``if TYPE_CHECKING:``, and a
module's import of one of its own ancestor packages (``from .. import __version__``: Python has
run that ``__init__`` before the module anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = "edgemed_runtime"
ROOT = REPO / "runtimes" / PKG
PACKAGES = {"edgemed": REPO / "edgemed", PKG: ROOT}  # package name -> its folder


def _modules(pkg: str, root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (source file, is a package)}`` of every module of package ``pkg``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [pkg, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            found.extend(_imports(ast.Module(body=child.orelse, type_ignores=[])))
        else:
            found.extend(_imports(child))
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> list[str]:
    """The dotted names a statement imports, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod, *(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules)]


def import_graph(pkg: str = PKG) -> dict[str, set[str]]:
    """``{module: modules of package pkg it imports}``."""
    modules = _modules(pkg, PACKAGES[pkg])
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package, set(modules)):
                if target != pkg and not target.startswith(pkg + "."):
                    continue
                while target not in modules:  # a name from a module: the module
                    target = target.rpartition(".")[0]
                while target and target != name and not name.startswith(target + "."):
                    edges.add(target)  # the module and the packages above it
                    target = target.rpartition(".")[0]
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := visit(w)) is not None:
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)) is not None:
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    # api.open imports the bundle layer inside a function, relatively; and its package
    assert {f"{PKG}.bundle.container", f"{PKG}.bundle"} <= graph[f"{PKG}.api"]
    assert f"{PKG}.backends.tensorrt.recipe" in graph[f"{PKG}.backends.tensorrt.backend"]
    # the SDK's demo imports the bench timing inside a function, relatively; and its package
    assert {"edgemed.bench.timing", "edgemed.bench"} <= import_graph("edgemed")["edgemed.demo"]


def test_find_cycle_reports_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_memory_helpers_import_nothing_of_the_package() -> None:
    assert import_graph()[f"{PKG}._memory"] == set()


@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_no_import_cycle(pkg: str) -> None:
    cycle = find_cycle(import_graph(pkg))
    if cycle is not None:
        pytest.fail("import cycle: " + " -> ".join(cycle))
