"""Fixtures for the mobile-runtime tests (ExecuTorch, LiteRT): the backend tests' TinyNet, data
and FP32 reference, and a ``run_chain`` that starts from the PyTorch model (these passes take
an nn.Module, not the ONNX export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.backends.conftest import build_ctx, chain_runner, fp32_artifact, ref_logits, val_data  # noqa: F401


@pytest.fixture(scope="session")
def torch_artifact(tmp_path_factory: pytest.TempPathFactory, trained_tiny: Any,
                   spec16: Any) -> Any:
    """The trained TinyNet as a ``torch`` artifact (1x16x16, two labels)."""
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    io = IOSpec(input_shape=(1, 1, 16, 16), labels=("no_lesion", "lesion"))
    return Artifact(path=tmp_path_factory.mktemp("torch-src"), format="torch", model_file="",
                    io=io, preprocess=spec16, payload=trained_tiny)


@pytest.fixture(scope="session")
def run_chain(tmp_path_factory: pytest.TempPathFactory, torch_artifact: Any,
              build_ctx: Any) -> Callable[..., Any]:  # noqa: F811
    """``run_chain([(pass_name, settings), ...])`` from the torch artifact (memoised)."""
    return chain_runner(torch_artifact, tmp_path_factory, build_ctx)


def litert_python() -> Path | None:
    """The interpreter the litert pass converts with, or None when there is none."""
    from edgemed.passes.litert import converter_python

    try:
        return converter_python(None)
    except Exception:
        return None
