"""Every error code in the source is in ``edgemed_runtime.error_codes.ERROR_CODES``, every entry
there is used, and ``docs/error-codes.md`` is the table.

Codes are found in the source without running it: ``code="..."`` keywords (string constants
anywhere in the value: ``code="a" if x else "b"``), ``default_code = "..."`` class attributes,
string constants passed to a module's own helper in its ``code`` parameter's position
(``_bad("message", "corrupt")``), and the string constants assigned in the same function to a
name passed as ``code=name``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from edgemed_runtime.error_codes import ERROR_CODES, markdown

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("edgemed", "runtimes/edgemed_runtime")
                 for p in (ROOT / d).rglob("*.py"))


def _strings(node: ast.AST) -> list[str]:
    """String constants in ``node``, not looking inside calls (``e.get("code") or "x"`` -> x)."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.Call):
        return []
    return [s for child in ast.iter_child_nodes(node) for s in _strings(child)]


def _assigned(scope: ast.AST, name: str) -> list[str]:
    """String constants assigned to ``name`` in ``scope`` (``x = "a"``, ``y, x = "b", "a"``)."""
    found = []
    for n in ast.walk(scope):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name) and t.id == name:
                    found += _strings(n.value)
                elif isinstance(t, ast.Tuple) and isinstance(n.value, ast.Tuple):
                    found += [s for tt, v in zip(t.elts, n.value.elts)
                              if isinstance(tt, ast.Name) and tt.id == name for s in _strings(v)]
    return found


def _codes(tree: ast.Module) -> set[str]:
    functions = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    positional = {f.name: [a.arg for a in f.args.posonlyargs + f.args.args] for f in functions}
    helpers = {name: args.index("code") for name, args in positional.items() if "code" in args}
    owner = {id(n): f for f in functions for n in ast.walk(f)}  # innermost wins (walked last)
    codes: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "default_code"
                                             for t in n.targets):
            codes.update(_strings(n.value))
        if not isinstance(n, ast.Call):
            continue
        for kw in n.keywords:
            if kw.arg == "code" and isinstance(kw.value, ast.Name):
                scope = owner.get(id(n), tree)
                params = [a.arg for a in scope.args.args + scope.args.kwonlyargs] \
                    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
                if kw.value.id not in params:  # a helper's parameter: found at its call sites
                    assert _assigned(scope, kw.value.id), f"cannot resolve code={kw.value.id}"
                    codes.update(_assigned(scope, kw.value.id))
            elif kw.arg == "code":
                codes.update(_strings(kw.value))
        name = getattr(n.func, "id", getattr(n.func, "attr", None))
        if name in helpers and len(n.args) > helpers[name]:
            codes.update(_strings(n.args[helpers[name]]))
    return codes


def source_codes() -> set[str]:
    """Every error code the SDK and the runtime can raise."""
    return {c for p in SOURCES for c in _codes(ast.parse(p.read_text(), filename=str(p)))}


def test_every_code_literal_is_in_the_table() -> None:
    literals = {c for p in SOURCES for c in re.findall(r'\bcode="([^"]+)"', p.read_text())}
    assert literals, "no code= literal found"
    assert not literals - ERROR_CODES.keys(), "add to edgemed_runtime/error_codes.py"


def test_every_raised_code_is_in_the_table_and_every_entry_is_raised() -> None:
    codes = source_codes()
    assert not codes - ERROR_CODES.keys(), "add to edgemed_runtime/error_codes.py"
    assert not ERROR_CODES.keys() - codes, "no longer raised: remove from the table"


def test_table_is_well_formed() -> None:
    for code, meaning in ERROR_CODES.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", code), code
        assert meaning and "\n" not in meaning and "|" not in meaning, code


def test_docs_list_every_code() -> None:
    doc = (ROOT / "docs" / "error-codes.md").read_text()
    assert doc == markdown(), \
        "regenerate: python -m edgemed_runtime.error_codes > docs/error-codes.md"
