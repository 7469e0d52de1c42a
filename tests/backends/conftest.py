"""Fixtures for the backend tests: a trained TinyNet exported to FP32 ONNX, its calibration and
validation inputs (the synthetic CT set, seeded), and a helper that runs a pass chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest


@pytest.fixture(scope="session")
def val_data(synthetic_dir: Path, spec16: Any) -> Any:
    """The synthetic set preprocessed to 1x16x16 (64 labelled samples)."""
    from edgemed.dicom import load_folder

    return load_folder(synthetic_dir, spec16, class_names=("no_lesion", "lesion"))


@pytest.fixture(scope="session")
def build_ctx(val_data: Any) -> Any:
    from edgemed.passes.base import BuildContext

    return BuildContext(calibration=val_data.x[:48].astype(np.float32), seed=0, threads=2)


@pytest.fixture(scope="session")
def fp32_artifact(tmp_path_factory: pytest.TempPathFactory, trained_tiny: Any, spec16: Any,
                  build_ctx: Any) -> Any:
    """The trained TinyNet exported to ONNX by the export_onnx pass."""
    from edgemed.passes.export_onnx import ExportOnnx
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    io = IOSpec(input_shape=(1, 1, 16, 16), labels=("no_lesion", "lesion"))
    src = Artifact(path=tmp_path_factory.mktemp("src"), format="torch", model_file="", io=io,
                   preprocess=spec16, payload=trained_tiny)
    return ExportOnnx()(src, tmp_path_factory.mktemp("fp32"), build_ctx)


@pytest.fixture(scope="session")
def ref_logits(fp32_artifact: Any, val_data: Any) -> np.ndarray:
    """FP32 reference logits (onnxruntime CPU) on the validation inputs."""
    from edgemed_runtime.api import open_artifact

    with open_artifact(fp32_artifact, options={"threads": 2}) as sess:
        return sess.run({"input": val_data.x})["logits"]


def chain_runner(start: Any, tmp_path_factory: pytest.TempPathFactory,
                 ctx: Any) -> Callable[[list[tuple[str, dict[str, Any]]]], Any]:
    """``run([(pass_name, settings), ...])`` -> the artifact after those passes from ``start``
    (each prefix of a chain built once)."""
    from edgemed.passes.base import get_pass_class

    memo: dict[str, Any] = {}

    def run(chain: list[tuple[str, dict[str, Any]]]) -> Any:
        art, key = start, ""
        for name, settings in chain:
            key += f"{name}{sorted(settings.items())}"
            if key not in memo:
                wd = tmp_path_factory.mktemp(name)
                memo[key] = get_pass_class(name)(settings)(art, wd, ctx)
            art = memo[key]
        return art

    return run


@pytest.fixture(scope="session")
def run_chain(tmp_path_factory: pytest.TempPathFactory, fp32_artifact: Any,
              build_ctx: Any) -> Callable[..., Any]:
    """``run_chain([(pass_name, settings), ...])`` -> the artifact after those passes (memoised)."""
    return chain_runner(fp32_artifact, tmp_path_factory, build_ctx)
