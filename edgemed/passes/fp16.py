"""fp16: ONNX FP32 -> ONNX FP16 (inputs and outputs kept FP32) for GPU targets.

Uses onnxruntime's converter (``onnxruntime.transformers.float16.convert_float_to_float16``,
shipped with onnxruntime; onnxconverter-common is not needed). Operators that are numerically
fragile in FP16 stay FP32 via ``keep_fp32_op_types`` (onnxruntime's default block list is always
applied). The result feeds TensorRT strongly typed networks (types come from the ONNX) and the
onnxruntime CUDA EP.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import ExportError
from .base import BuildContext, Pass, PassConfig, PassOutput


class Fp16Config(PassConfig):
    keep_io_types: bool = True
    keep_fp32_op_types: tuple[str, ...] = ()
    keep_fp32_nodes: tuple[str, ...] = ()


class Fp16(Pass[Fp16Config]):
    """ONNX FP32 -> ONNX FP16."""

    name = "fp16"
    Config = Fp16Config
    accepts = ("onnx",)
    produces = "onnx"
    requires = ("onnxruntime", "onnx")
    modules = ("onnxruntime", "onnx")

    def tool_versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        cfg = self.config
        workdir = Path(workdir)
        try:
            model = onnx.load(str(artifact.model_path))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m16 = convert_float_to_float16(
                    model, keep_io_types=cfg.keep_io_types,
                    op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *cfg.keep_fp32_op_types}),
                    node_block_list=list(cfg.keep_fp32_nodes) or None,
                )
            _topological_sort(m16.graph)  # the converter appends its input Casts at the end
            onnx.checker.check_model(m16)
            data = m16.SerializeToString()
        except Exception as exc:
            raise ExportError("FP16 conversion failed", found=f"{type(exc).__name__}: {exc}"[:500],
                              fix="keep the failing operator types in FP32 (keep_fp32_op_types)",
                              code="convert-failed") from None
        out = workdir / "model.fp16.onnx"
        atomic_write_bytes(out, data)
        n16 = sum(1 for t in m16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        record = {"fp16_initializers": n16, "initializers": len(m16.graph.initializer),
                  "bytes": len(data)}
        return artifact.evolve(path=workdir, model_file=out.name, format="onnx"), record


def _topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input at {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
