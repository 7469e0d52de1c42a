"""docs/extending.md and docs/architecture.md stay true to the code: every path they name exists,
and the pass table lists every registered pass with its module, formats and ``Config`` fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgemed.passes.base import _REGISTRY, get_pass_class, pass_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/extending.md", "docs/architecture.md")


def _ticked(text: str) -> list[str]:
    """The names in backticks in ``text`` (``"`a`, `b`"`` -> ``["a", "b"]``)."""
    return re.findall(r"`([^`]*)`", text)


def pass_table() -> dict[str, dict[str, object]]:
    """``{pass: {module, accepts, produces, options}}`` from the table in docs/extending.md."""
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text.split("## The passes and their options", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        name, module, accepts, produces, options = cells
        rows[_ticked(name)[0]] = {"module": _ticked(module)[0], "accepts": _ticked(accepts),
                                  "produces": _ticked(produces)[0], "options": _ticked(options)}
    return rows


@pytest.mark.parametrize("doc", DOCS)
def test_named_paths_exist(doc: str) -> None:
    """Every ``dir/file.ext`` in backticks exists (``<name>`` placeholders aside); runtime
    paths may be given from the package (``bundle/format.py`` under edgemed_runtime)."""
    text = (ROOT / doc).read_text()
    paths = {p for p in _ticked(text) if re.fullmatch(r"[\w./-]+/[\w.-]+\.(py|toml|md)", p)}
    assert paths
    bases = (ROOT, ROOT / "runtimes" / "edgemed_runtime", ROOT / "edgemed")
    missing = sorted(p for p in paths if not any((b / p).exists() for b in bases))
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_pass_table_matches_the_registry() -> None:
    rows = pass_table()
    assert sorted(rows) == pass_names()
    for name, row in rows.items():
        cls = get_pass_class(name)
        assert row["module"] == _REGISTRY[name].split(":")[0].replace(".", "/") + ".py", name
        assert row["accepts"] == list(cls.accepts), name
        assert row["produces"] == cls.produces, name
        assert row["options"] == list(cls.Config.model_fields), f"{name}: options differ"
