"""convert_openvino: ONNX -> FP32 OpenVINO IR (packed XML + weights, uncompressed).

For targets that run OpenVINO without INT8 (or as the FP32 comparison). The OpenVINO backend
sets INFERENCE_PRECISION_HINT=f32 so "FP32" stays FP32 on AVX-512 BF16 / AMX CPUs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from edgemed_runtime import Artifact

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput


class ConvertOpenVinoConfig(PassConfig):
    pass


class ConvertOpenVino(Pass[ConvertOpenVinoConfig]):
    """ONNX -> OpenVINO IR (FP32)."""

    name = "convert_openvino"
    Config = ConvertOpenVinoConfig
    accepts = ("onnx",)
    produces = "openvino-ir"
    requires = ("openvino",)
    modules = ("openvino",)

    def tool_versions(self) -> dict[str, str]:
        from .._openvino import no_telemetry

        no_telemetry()
        import openvino as ov

        return {"openvino": ov.get_version()}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from .._openvino import no_telemetry

        no_telemetry()
        import openvino as ov

        from .quantize.openvino import save_packed

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "model.ovir"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                size = save_packed(ov.convert_model(str(artifact.model_path)), out)
        except Exception as exc:
            raise ExportError("OpenVINO conversion failed",
                              found=f"{type(exc).__name__}: {exc}"[:500],
                              code="convert-failed") from None
        return artifact.evolve(path=workdir, model_file=out.name,
                               format="openvino-ir"), {"bytes": size}
