"""ExecuTorch (XNNPACK) target: the INT8 and FP32 ``.pte`` of the TinyNet through the shared
backend contract (Session API, agreement with FP32, typed errors, probe, concurrency), and the
3D refusal before any export."""

from __future__ import annotations

from typing import Any

import pytest

from edgemed_runtime.backends import backend_class
from tests.backends.template import BackendContract

pytestmark = pytest.mark.skipif(not backend_class("executorch").is_available(),
                                reason="the executorch extra is not installed "
                                "(pip install 'edgemed[executorch]' -c constraints.txt)")


class TestExecuTorchInt8(BackendContract):
    backend = "executorch"
    chain = [("executorch_xnnpack", {})]
    expected_format = "pte"

    def test_provenance_and_format(self, artifact: Any) -> None:
        rec = artifact.provenance[-1]
        assert rec["pass"] == "executorch_xnnpack" and rec["quantized"]
        assert rec["calibration_samples"] == 48 and rec["delegate_calls"] >= 1
        assert rec["tools"]["executorch"] == "1.5.1"
        assert artifact.model_path.read_bytes()[4:8] == b"ET12"  # ExecuTorch's flatbuffer id
        assert artifact.io.input_shape == (1, 1, 16, 16) and not artifact.io.dynamic_batch


class TestExecuTorchFp32(BackendContract):
    backend = "executorch"
    chain = [("executorch_xnnpack", {"quantize": False})]
    expected_format = "pte"
    max_abs_diff = 1e-3
    min_cosine = 0.9999


def test_3d_model_refused_before_export(tmp_path: Any, build_ctx: Any) -> None:
    import torch

    from edgemed.errors import ExportError
    from edgemed.passes.executorch import ExecuTorchXnnpack
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, stride=2), torch.nn.Flatten())
    io = IOSpec(input_shape=(1, 1, 8, 16, 16), labels=("a", "b"))
    art = Artifact(path=tmp_path, format="torch", model_file="", io=io, payload=net)
    with pytest.raises(ExportError) as err:
        ExecuTorchXnnpack()(art, tmp_path / "out", build_ctx)
    assert err.value.code == "needs-2d" and "Conv3d" in str(err.value.found)
    assert not (tmp_path / "out").exists()  # refused before anything was exported


def test_bad_program_bytes_are_typed() -> None:
    from edgemed_runtime.backends import get_backend
    from edgemed_runtime.errors import BackendError
    from edgemed_runtime.iospec import IOSpec

    with pytest.raises(BackendError) as err:
        get_backend("executorch").open(b"not a program" * 8, IOSpec(input_shape=(1, 1, 16, 16)),
                                       {})
    assert err.value.code == "model-load-failed"


def test_build_gates_and_records_the_pte(tmp_path: Any, trained_tiny: Any, synthetic_dir: Any,
                                         spec16: Any) -> None:
    """``edgemed.build`` for the profile: the same gate (run on this host's XNNPACK kernels)."""
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions

    art = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                        validation=synthetic_dir, target="mobile-android-executorch",
                        out=tmp_path / "art", labels=("no_lesion", "lesion"), preprocess=spec16,
                        options=BuildOptions(select="et-xnnpack-int8"))
    assert art.format == "pte" and art.backend == "executorch"
    sel = next(r for r in art.provenance if r.get("pass") == "select_variant")
    gated = sel["gated_with"]["et-xnnpack-int8"]
    assert gated["backend"] == "executorch" and "this host's kernels" in gated["evaluator"]
    assert art.metrics["gate"]["passed"]
