"""executorch_xnnpack: a PyTorch model -> ExecuTorch ``.pte`` lowered to XNNPACK (INT8 or FP32).

The chain is ExecuTorch's documented one: ``torch.export`` at batch 1, then (``quantize``) the
PT2E flow with ``XNNPACKQuantizer`` (symmetric INT8, per-channel weights, static activations),
``prepare_pt2e``, calibration on the build's calibration inputs one sample at a time,
``convert_pt2e`` and a second export; then ``to_edge_transform_and_lower`` with the
``XnnpackPartitioner`` and ``to_executorch``. The program's bytes are written atomically.

Only 2D models: XNNPACK has no 3D convolution (google/XNNPACK#3978) and ExecuTorch's portable
Conv3d fails on 5-D input, so ``require_2d`` refuses a volume model (input rank != 4, or any
3D convolution / pooling module) before anything is exported (code ``needs-2d``).

The artifact takes exactly batch 1 (``dynamic_batch`` False), as the device program does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from edgemed_runtime import Artifact
from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput, require_calibration
from .torch_common import copy_module

_3D_MODULES = ("Conv3d", "ConvTranspose3d", "MaxPool3d", "AvgPool3d", "BatchNorm3d",
               "AdaptiveAvgPool3d", "AdaptiveMaxPool3d", "InstanceNorm3d")


def require_2d(artifact: Artifact, runtime: str) -> None:
    """Refuse a 3D model for a 2D-only mobile runtime, before any conversion runs.

    Args:
        artifact: the source artifact (its IO spec; its nn.Module when format is ``torch``).
        runtime: the runtime's name, for the message (``ExecuTorch XNNPACK``, ``LiteRT``).

    Raises:
        ExportError(code="needs-2d"): the input is not (N, C, H, W) or the model has a 3D layer.
    """
    shape = tuple(artifact.io.input_shape)
    layers: list[str] = []
    module = artifact.payload
    if module is not None and hasattr(module, "modules"):
        layers = sorted({type(m).__name__ for m in module.modules()} & set(_3D_MODULES))
    if len(shape) != 4 or layers:
        found = f"input shape {list(shape)}" + (f", layers {', '.join(layers)}" if layers else "")
        raise ExportError(
            f"{runtime} runs 2D models only", expected="input (N, C, H, W) and no 3D layers",
            found=found,
            fix="build 3D models for cpu-x86 / cpu-arm64 / openvino-cpu, or for mobile-android "
            "(ORT format); slice the volume into 2D inputs to use this target",
            code="needs-2d")


class ExecuTorchConfig(PassConfig):
    quantize: bool = True
    per_channel: bool = True


class ExecuTorchXnnpack(Pass[ExecuTorchConfig]):
    """PyTorch nn.Module -> ``model.pte`` (XNNPACK delegate; PT2E INT8 when ``quantize``)."""

    name = "executorch_xnnpack"
    Config = ExecuTorchConfig
    accepts = ("torch",)
    produces = "pte"
    requires = ("executorch",)
    modules = ("executorch",)

    def tool_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"torch": version("torch"), "executorch": version("executorch")}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        require_2d(artifact, "ExecuTorch XNNPACK")
        module = copy_module(artifact, self.name)
        calib = require_calibration(ctx) if self.config.quantize else None
        ctx.progress("ExecuTorch: export and lower to XNNPACK")
        try:
            data, counts = lower_to_pte(module, artifact.io.sample_shape, calib,
                                        per_channel=self.config.per_channel)
        except ExportError:
            raise
        except Exception as exc:  # torch.export / ExecuTorch raise many types
            raise ExportError("ExecuTorch export or lowering failed",
                              found=f"{type(exc).__name__}: {exc}"[:500],
                              fix="check that torch.export can export the model at batch 1",
                              code="convert-failed") from None
        out = Path(workdir) / "model.pte"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
        io = replace(artifact.io, input_shape=(1, *artifact.io.sample_shape), dynamic_batch=False)
        record: dict[str, Any] = {"bytes": len(data), **counts}
        return (artifact.evolve(path=Path(workdir), model_file=out.name, format="pte", io=io,
                                payload=None), record)


def lower_to_pte(module: Any, sample_shape: tuple[int, ...], calib: np.ndarray | None, *,
                 per_channel: bool) -> tuple[bytes, dict[str, Any]]:
    """Export ``module`` at batch 1, quantize it (when ``calib`` is given) and lower it.

    Returns:
        The ``.pte`` bytes and counts for provenance (calibration samples, delegated nodes).
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        example = (torch.zeros((1, *sample_shape), dtype=torch.float32),)
        with torch.no_grad():
            ep = torch.export.export(module, example)
            counts: dict[str, Any] = {"quantized": calib is not None}
            if calib is not None:
                ep = _quantize(ep, example, calib, per_channel=per_channel)
                counts["calibration_samples"] = int(len(calib))
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            graph = edge.exported_program().graph
            calls = [n for n in graph.nodes if n.op == "call_function"]
            counts["delegate_calls"] = sum("executorch_call_delegate" in str(n.target)
                                           for n in calls)
            counts["undelegated_ops"] = sorted({str(n.target) for n in calls
                                                if "executorch_call_delegate" not in str(n.target)
                                                and "getitem" not in str(n.target)})
            return bytes(edge.to_executorch().buffer), counts


def _quantize(ep: Any, example: tuple[Any, ...], calib: np.ndarray, *, per_channel: bool) -> Any:
    """PT2E INT8 with the XNNPACK quantizer, calibrated on ``calib`` (one sample per call)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel))
    prepared = prepare_pt2e(ep.module(), quantizer)
    for x in np.asarray(calib, np.float32):
        prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, example)
