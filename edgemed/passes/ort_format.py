"""ort_format: ONNX / QDQ ONNX -> ORT format (mobile), with NNAPI / CoreML operator coverage.

Uses onnxruntime's converter (``onnxruntime.tools.convert_onnx_models_to_ort``). The settings are
per target, because they change speed: measured on this project's x86 host, the converter's
default target platform (``arm``) made FP32 ORT-format files 1.3-1.7x slower than the same model
as ONNX (the NCHWc layout transformer is left out for ARM), while ``amd64`` matched it. Android /
iOS profiles keep ``arm`` (the device is ARM); x86 stand-ins use ``amd64``.

The pass also runs onnxruntime's mobile usability checker (NNAPI and CoreML partitioning) on the
model and records per execution provider: nodes supported, partitions, unsupported operators and
the checker's verdict, both as is and with fixed input shapes. Measured on MONAI ResNet-18 U8S8:
NNAPI takes 28% of the nodes with a dynamic batch dimension and 100% with it fixed, hence
``fix_batch`` (the artifact then takes exactly that batch size). With
``optimization_style = "runtime"`` the variant must set the backend option
``saved_runtime_optimizations = true`` for onnxruntime to replay them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field
from edgemed_runtime import Artifact

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput

_ENV = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
_ENV_LOCK = threading.Lock()


class OrtFormatConfig(PassConfig):
    target_platform: Literal["arm", "amd64"] = "arm"
    optimization_style: Literal["fixed", "runtime"] = "fixed"
    optimization_level: Literal["disable", "basic", "extended", "layout", "all"] = "all"
    coverage: bool = True
    fix_batch: int | None = Field(None, ge=1)


def _info(p: Any) -> dict[str, Any]:
    n = max(int(p.num_nodes), 1)
    return {"nodes": int(p.num_nodes), "supported_nodes": int(p.num_supported_nodes),
            "supported_pct": round(100.0 * p.num_supported_nodes / n, 1),
            "partitions": int(p.num_partitions), "unsupported_ops": sorted(p.unsupported_ops),
            "suitability": p.suitability().name}


def mobile_coverage(model_path: Path) -> dict[str, Any]:
    """NNAPI / CoreML coverage of an ONNX model by onnxruntime's usability checker.

    The model is optimised to the BASIC level first (as the converter would) in a temp folder.
    Returns ``{ep: {"as_is": {...}, "fixed_shapes": {...}}}``.
    """
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        opt = Path(tmp) / "basic.onnx"
        uc.optimize_model(model_path, opt)
        model = uc.ModelProtoWithShapeInfo(opt).model_with_shape_info
        checks = {
            "nnapi": lambda m, f: uc.check_nnapi_partitions(m, f),
            "coreml_mlprogram": lambda m, f: uc.check_coreml_partitions(
                m, f, "coreml_supported_mlprogram_ops.md"),
            "coreml_neuralnetwork": lambda m, f: uc.check_coreml_partitions(
                m, f, "coreml_supported_neuralnetwork_ops.md"),
        }
        for ep, fn in checks.items():
            out[ep] = {"as_is": _info(fn(model, True)), "fixed_shapes": _info(fn(model, False))}
    return out


class OrtFormat(Pass[OrtFormatConfig]):
    """ONNX (FP32 or QDQ) -> .ort file for ORT Mobile / onnxruntime."""

    name = "ort_format"
    Config = OrtFormatConfig
    accepts = ("onnx", "onnx-qdq")
    produces = "ort"
    requires = ("onnxruntime",)
    modules = ("onnxruntime",)

    def tool_versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        from onnxruntime.tools.convert_onnx_models_to_ort import (
            OptimizationStyle,
            convert_onnx_models_to_ort,
        )

        cfg = self.config
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        style = OptimizationStyle.Fixed if cfg.optimization_style == "fixed" else \
            OptimizationStyle.Runtime
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            src = Path(tmp) / "in" / "model.onnx"
            src.parent.mkdir()
            if cfg.fix_batch:
                fix_batch(artifact.model_path, src, cfg.fix_batch)
            else:
                shutil.copyfile(artifact.model_path, src)
            outdir = Path(tmp) / "out"
            try:
                with _ENV_LOCK, _env(_ENV, cfg.optimization_level), \
                        contextlib.redirect_stdout(io.StringIO()):
                    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
                    logging.getLogger("ort_format_model").setLevel(logging.ERROR)
                    _ort_quiet()
                    convert_onnx_models_to_ort(src, output_dir=outdir, optimization_styles=[style],
                                               target_platform=cfg.target_platform)
            except Exception as exc:
                raise ExportError("ORT-format conversion failed",
                                  found=f"{type(exc).__name__}: {exc}"[:500],
                                  fix="check that onnxruntime can load the model",
                                  code="convert-failed") from None
            produced = sorted(outdir.glob("*.ort"))
            # the Runtime style writes two files: with saved runtime optimisations and without
            pick = [p for p in produced if "with_runtime_opt" in p.name] or produced
            if not pick:
                raise ExportError("ORT-format conversion produced no file", code="convert-failed")
            out = workdir / "model.ort"
            tmp_out = workdir / ".model.ort.tmp"
            shutil.copyfile(pick[0], tmp_out)
            tmp_out.replace(out)
            record: dict[str, Any] = {"bytes": out.stat().st_size}
            if cfg.coverage:  # on the model as converted (batch fixed or not)
                try:
                    record["mobile_coverage"] = mobile_coverage(src)
                except Exception as exc:  # the checker is advisory: record why it failed
                    record["mobile_coverage"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        io_spec = artifact.io
        if cfg.fix_batch:
            io_spec = replace(io_spec, input_shape=(cfg.fix_batch, *io_spec.sample_shape),
                              dynamic_batch=False)
        return artifact.evolve(path=workdir, model_file=out.name, format="ort", io=io_spec), record


def fix_batch(src: Path, dst: Path, batch: int) -> None:
    """Copy the ONNX model at ``src`` to ``dst`` with the inputs' first (batch) dimension fixed
    to ``batch`` and output shapes re-inferred (NNAPI and Core ML need static shapes)."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model = onnx.load(str(src))
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = [batch] + [d.dim_value for d in dims[1:]]
        if any(v <= 0 for v in shape[1:]):
            raise ExportError("only the batch dimension may be dynamic for fix_batch",
                              found=f"input {inp.name}: "
                              f"{[d.dim_param or d.dim_value for d in dims]}",
                              code="dynamic-shape")
        make_input_shape_fixed(model.graph, inp.name, shape)
    fix_output_shapes(model)
    onnx.save(model, str(dst))


@contextlib.contextmanager
def _env(name: str, value: str) -> Any:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _ort_quiet() -> None:
    """Errors only from onnxruntime's default logger (the converter's sessions use it)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
