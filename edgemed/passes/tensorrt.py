"""tensorrt_recipe: QDQ or FP16 ONNX -> a TensorRT recipe (ONNX + builder settings) for the device.

TensorRT engines are specific to a GPU and a TensorRT version, so the build ships the recipe and
the device builds (and caches, encrypted) the engine. This pass checks at build time what
TensorRT would reject on the device: its explicit quantization takes only symmetric INT8
(QuantizeLinear / DequantizeLinear with int8 zero points that are all 0) — quantize with
``activation_type="int8"``, ``weight_type="int8"``, ``symmetric_activations=true``. When the
tensorrt package is installed the ONNX parser also runs here (parsing needs no GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import model_validator

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import TrtRecipe, atomic_write_bytes, pack_recipe

from ..errors import ExportError, InvalidInputError
from .base import BuildContext, Pass, PassConfig, PassOutput
from .onnx_graph import drop_unused_initializers


_DEFAULT = TrtRecipe()


class TensorRtRecipeConfig(PassConfig):
    """The recipe's builder settings: the fields and defaults of ``TrtRecipe`` (the schema the
    device reads) but ``precision``, which comes from the model; checked by
    ``TrtRecipe.validate``, as on the device."""

    typing: str = _DEFAULT.typing
    fp16_fallback: bool = _DEFAULT.fp16_fallback
    workspace_mb: int = _DEFAULT.workspace_mb
    min_batch: int = _DEFAULT.min_batch
    opt_batch: int = _DEFAULT.opt_batch
    max_batch: int = _DEFAULT.max_batch
    optimization_level: int = _DEFAULT.optimization_level

    @model_validator(mode="after")
    def _valid(self) -> "TensorRtRecipeConfig":
        try:
            self.recipe(_DEFAULT.precision)
        except InvalidInputError as exc:
            raise ValueError(exc.found or exc.message) from None
        return self

    def recipe(self, precision: str) -> TrtRecipe:
        """The recipe for a model of ``precision`` (``int8``, ``fp16`` or ``fp32``).

        Raises:
            InvalidInputError(code="bad-option"): a value out of range.
        """
        recipe = TrtRecipe(precision=precision, **self.model_dump())
        recipe.validate()
        return recipe


def fold_int32_bias(model: Any) -> int:
    """Replace DequantizeLinear nodes of int32 constants (onnxruntime's quantized biases; TensorRT
    dequantizes only 8-bit and narrower types) by their float32 values. Returns how many."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    keep, folded = [], 0
    for node in model.graph.node:
        x = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if x is None or x.data_type != TensorProto.INT32:
            keep.append(node)
            continue
        q = numpy_helper.to_array(x).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
              if len(node.input) > 2 and node.input[2] in inits else np.zeros_like(scale))
        if scale.ndim == 1 and q.ndim > 0 and scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        value = ((q - zp) * scale).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        drop_unused_initializers(model.graph)
    return folded


def qdq_problems(model: Any) -> list[str]:
    """What TensorRT's explicit quantization would reject in an ONNX ModelProto (empty = fine)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")}
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            if node.op_type == "QuantizeLinear":
                problems.append(f"{node.name}: no zero point (ONNX then quantizes to uint8)")
            continue
        zp = inits.get(node.input[2]) or consts.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name}: zero point is not a constant")
            continue
        if zp.data_type != TensorProto.INT8:
            kind = TensorProto.DataType.Name(zp.data_type).lower()
            problems.append(f"{node.name}: zero point type {kind} (TensorRT needs int8)")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name}: non-zero zero point (asymmetric)")
    return problems


def precision_of(model: Any, fmt: str) -> str:
    """``int8`` for QDQ models, ``fp16`` when the weights are FP16, else ``fp32``."""
    from onnx import TensorProto

    if fmt == "onnx-qdq" or any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


class TensorRtRecipePass(Pass[TensorRtRecipeConfig]):
    """ONNX / QDQ ONNX -> trt-plan-recipe (checked for TensorRT's quantization rules)."""

    name = "tensorrt_recipe"
    Config = TensorRtRecipeConfig
    accepts = ("onnx", "onnx-qdq")
    produces = "trt-plan-recipe"
    requires = ("onnx",)
    modules = ("onnx",)

    def tool_versions(self) -> dict[str, str]:
        import onnx

        return {"onnx": onnx.__version__}

    def run(self, artifact: Artifact, workdir: Path, ctx: BuildContext) -> PassOutput:
        import onnx

        cfg = self.config
        data = artifact.model_path.read_bytes()
        model = onnx.load_from_string(data)
        folded = fold_int32_bias(model)
        if folded:
            data = model.SerializeToString()
        problems = qdq_problems(model)
        if problems:
            raise ExportError(
                "the QDQ model uses quantization TensorRT cannot build",
                expected="symmetric INT8 (int8 zero points, all 0)",
                found=f"{len(problems)} nodes, e.g. " + "; ".join(problems[:3]),
                fix="quantize with activation_type='int8', weight_type='int8', "
                "symmetric_activations=true", code="trt-qdq",
            )
        recipe = cfg.recipe(precision_of(model, artifact.format))
        record: dict[str, Any] = {"recipe": recipe.to_dict(), "parser": _parse_check(data),
                                  "int32_bias_folded": folded}
        out = Path(workdir) / "model.trtr"
        atomic_write_bytes(out, pack_recipe(recipe, data))
        return artifact.evolve(path=Path(workdir), model_file=out.name,
                               format="trt-plan-recipe"), record


def _parse_check(data: bytes) -> str:
    """Run TensorRT's ONNX parser when tensorrt is importable; say what was checked."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "not run: tensorrt is not installed on the build host (the device parses it)"
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # no GPU / driver on the build host
        return f"not run: {type(exc).__name__}: {exc}"[:200]
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError("TensorRT's ONNX parser rejects the model", found=errors[:800],
                          code="trt-parse")
    return f"parsed by TensorRT {trt.__version__}"
