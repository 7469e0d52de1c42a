"""The declared public API (docs/api.md): the ``__all__`` of ``edgemed``, ``edgemed_runtime`` and
``edgemed_runtime.sdk`` are the names documented there, each imports, and the SDK reaches the
runtime only through those modules and their listed names (checked on the source, imports inside
functions included)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLIC = ("edgemed", "edgemed_runtime", "edgemed_runtime.sdk")
SDK_MAY_IMPORT = ("edgemed_runtime", "edgemed_runtime.sdk")


def _documented() -> dict[str, list[str]]:
    """``{module: [names]}``: the backticked names in the first column of each section's table."""
    out: dict[str, list[str]] = {}
    module = None
    for line in (REPO / "docs" / "api.md").read_text().splitlines():
        heading = re.match(r"## `([\w.]+)`", line)
        if heading:
            module = heading.group(1)
            out[module] = []
        elif module and line.startswith("| `"):
            out[module] += re.findall(r"`(\w+)`", line.split("|")[1])
    return out


@pytest.mark.parametrize("module", PUBLIC)
def test_all_is_documented(module: str) -> None:
    mod = importlib.import_module(module)
    documented = _documented()[module]
    assert len(documented) == len(set(documented)), "a name documented twice"
    assert sorted(mod.__all__) == sorted(documented)
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def _sdk_imports() -> list[tuple[str, int, str, list[str]]]:
    """``(file, line, module, names)`` of every import of the runtime in edgemed/; attribute
    reads of a module bound by ``import edgemed_runtime`` count as names imported from it."""
    found = []
    for path in sorted((REPO / "edgemed").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}  # local name -> runtime module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                    node.module.split(".")[0] == "edgemed_runtime"):
                found.append((rel, node.lineno, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "edgemed_runtime":
                        found.append((rel, node.lineno, a.name, []))
                        bound[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound):
                found.append((rel, node.lineno, bound[node.value.id], [node.attr]))
    return found


def test_sdk_imports_only_the_public_runtime_modules() -> None:
    imports = _sdk_imports()
    assert imports
    bad = [f"{f}:{n} {m}" for f, n, m, _ in imports if m not in SDK_MAY_IMPORT]
    assert not bad, "edgemed/ imports a private runtime module; use edgemed_runtime.sdk"


def test_sdk_imports_only_listed_runtime_names() -> None:
    listed = {m: set(importlib.import_module(m).__all__) for m in SDK_MAY_IMPORT}
    bad = [f"{f}:{n} {m}.{name}" for f, n, m, names in _sdk_imports() for name in names
           if name.startswith("_") or name not in listed.get(m, set())]
    assert not bad, "add the name to edgemed_runtime.sdk (and docs/api.md), or use a listed one"


def test_details_default_and_copy() -> None:
    """A backend that fills no details has an empty mapping; ``Session.details`` is a copy."""
    from edgemed_runtime import BackendSession, IOSpec, PreprocessSpec, Session

    class Bare(BackendSession):
        input_names = ("input",)
        output_names = ("logits",)

        def run(self, feeds: Any) -> list[np.ndarray]:
            return [np.zeros((1, 2), np.float32)]

    assert dict(Bare().details) == {}
    bare = Bare()
    bare.details = {"providers": ["CPUExecutionProvider"]}
    sess = Session(bare, IOSpec(), PreprocessSpec(), "bare")
    sess.details["providers"] = []
    assert sess.details == {"providers": ["CPUExecutionProvider"]}
