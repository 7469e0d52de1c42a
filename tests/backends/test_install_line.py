"""A missing backend is named with the line that installs it: the runtime extra when the backend
has one (``Backend.extra``), else its packages; every built-in extra exists in
runtimes/pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

import pytest

from edgemed_runtime.backends.base import Backend, BackendSession, install_line
from edgemed_runtime.errors import MissingDependencyError
from edgemed_runtime.iospec import IOSpec
from edgemed_runtime.sdk import backend_class, backend_names

ROOT = Path(__file__).resolve().parents[2]


class _Absent(Backend):
    name = "absent"
    formats = ("onnx",)
    requires = ("edgemed-no-such-package",)
    modules = ("edgemed_no_such_module",)

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        raise AssertionError("never opened")


class _AbsentWithExtra(_Absent):
    extra = "openvino"


def test_missing_backend_names_the_runtime_extra() -> None:
    with pytest.raises(MissingDependencyError) as e:
        _AbsentWithExtra.ensure_available()
    assert e.value.code == "missing-dependency"
    assert e.value.fix == "pip install 'edgemed-runtime[openvino]'"


def test_missing_backend_without_extra_names_its_packages() -> None:
    with pytest.raises(MissingDependencyError) as e:
        _Absent.ensure_available()
    assert e.value.fix == "pip install edgemed-no-such-package"
    assert install_line(None, ["a", "b"]) == "pip install a b"


def test_every_builtin_extra_is_a_runtime_extra() -> None:
    extras = tomllib.loads((ROOT / "runtimes" / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = {n: backend_class(n).extra for n in backend_names()}
    assert named["onnxruntime"] is None and named["openvino"] == "openvino"
    for name, extra in named.items():
        assert extra is None or extra in extras, name
