"""Code shape: no function over 80 lines or with more than 6 positional parameters.

An AST walk over ``edgemed/`` (but the CLI's command modules) and ``runtimes/edgemed_runtime/``;
a long task is split into named steps, and options beyond six are keyword-only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80
MAX_POSITIONAL = 6  # not counting self / cls


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function in ``tree``, methods as ``Class.method``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def offenders() -> dict[str, tuple[int, int]]:
    """``path:function`` -> (lines, positional parameters) of each function over a bar."""
    files = [p for d in ("edgemed", "runtimes/edgemed_runtime") for p in (ROOT / d).rglob("*.py")
             if not p.relative_to(ROOT).as_posix().startswith("edgemed/cli/")]
    out = {}
    for path in sorted(files):
        rel = path.relative_to(ROOT).as_posix()
        for name, fn in _functions(ast.parse(path.read_text(), filename=rel)):
            lines = fn.end_lineno - fn.lineno + 1  # type: ignore[operator]
            args = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            positional = len(args) - (args[:1] in (["self"], ["cls"]))
            if lines > MAX_LINES or positional > MAX_POSITIONAL:
                out[f"{rel}:{name}"] = (lines, positional)
    return out


def test_no_long_function_and_no_long_positional_list() -> None:
    found = offenders()
    assert not found, f"(lines, positional parameters) over {MAX_LINES} / {MAX_POSITIONAL}: {found}"
