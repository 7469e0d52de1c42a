"""LiteRT target: the full-INT8 ``.tflite`` of the TinyNet (converted by litert-torch in its own
environment, in a child process) through the shared backend contract, the 3D refusal before the
converter starts, and a converter that dies by a signal reported as a typed error."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from edgemed_runtime.backends import backend_class
from tests.backends.template import BackendContract

from .conftest import litert_python

pytestmark = pytest.mark.skipif(not backend_class("litert").is_available(),
                                reason="the litert extra is not installed "
                                "(pip install 'edgemed-runtime[litert]')")

needs_converter = pytest.mark.skipif(
    litert_python() is None,
    reason="no LiteRT converter environment (.venv-litert or $EDGEMED_LITERT_PYTHON; "
    "see docs/mobile.md)")


@needs_converter
class TestLiteRtInt8(BackendContract):
    backend = "litert"
    chain = [("litert", {})]
    expected_format = "tflite"

    def test_full_int8_flatbuffer(self, artifact: Any, session: Any) -> None:
        rec = artifact.provenance[-1]
        assert rec["pass"] == "litert" and rec["quantized"] and rec["calibration_samples"] == 48
        assert rec["tools"]["litert-torch"] == "0.10.0"
        assert session.details["input_dtype"] == "int8"  # full INT8, I/O included
        assert artifact.model_path.read_bytes()[4:8] == b"TFL3"


def _volume_artifact(tmp_path: Path) -> Any:
    import torch

    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, stride=2), torch.nn.Flatten())
    io = IOSpec(input_shape=(1, 1, 8, 16, 16), labels=("a", "b"))
    return Artifact(path=tmp_path, format="torch", model_file="", io=io, payload=net)


def test_3d_model_refused_before_the_converter_starts(tmp_path: Path, build_ctx: Any) -> None:
    from edgemed.errors import ExportError
    from edgemed.passes.litert import LiteRtConvert

    # a converter interpreter that does not exist: the 3D check must come first
    with pytest.raises(ExportError) as err:
        LiteRtConvert({"python": str(tmp_path / "no-python")})(
            _volume_artifact(tmp_path), tmp_path / "out", build_ctx)
    assert err.value.code == "needs-2d" and "Conv3d" in str(err.value.found)
    assert not (tmp_path / "out").exists()


def test_converter_killed_by_a_signal_is_typed(tmp_path: Path, torch_artifact: Any,
                                               build_ctx: Any) -> None:
    from edgemed.errors import ExportError
    from edgemed.passes.litert import LiteRtConvert

    dying = tmp_path / "python"
    dying.write_text("#!/bin/sh\nkill -SEGV $$\n")
    dying.chmod(dying.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ExportError) as err:
        LiteRtConvert({"python": str(dying)})(torch_artifact, tmp_path / "out", build_ctx)
    assert err.value.code == "converter-crashed"
    assert f"exit status -{int(signal.SIGSEGV)}" in str(err.value.found)
    assert not (tmp_path / "out" / "model.tflite").exists()
    assert os.listdir(tmp_path / "out") == []  # the temp folder is gone


@needs_converter
def test_build_gates_the_tflite(tmp_path: Path, trained_tiny: Any, synthetic_dir: Path,
                                spec16: Any) -> None:
    """``edgemed.build`` for the profile: the same gate, on this host's LiteRT kernels."""
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions

    art = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                        validation=synthetic_dir, target="mobile-litert", out=tmp_path / "art",
                        labels=("no_lesion", "lesion"), preprocess=spec16,
                        options=BuildOptions(select="litert-int8"))
    assert art.format == "tflite" and art.backend == "litert"
    sel = next(r for r in art.provenance if r.get("pass") == "select_variant")
    assert sel["gated_with"]["litert-int8"]["backend"] == "litert"
    assert art.metrics["gate"]["passed"]
