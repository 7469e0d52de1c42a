"""Count multiply-accumulates (MACs) of an ONNX graph: Conv / Gemm / MatMul and their quantized
forms, with shapes from ONNX shape inference at a given batch size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

CONV_OPS = ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose")
MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
             "MatMulInteger", "QLinearConv", "QLinearMatMul")


@dataclass(frozen=True)
class MacCount:
    """MACs per sample by operator type, and whether the graph is quantized (INT8)."""

    total: int
    by_op: dict[str, int]
    int8: bool
    uncounted: tuple[str, ...] = ()

    @property
    def gmacs(self) -> float:
        return self.total / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"gmacs": round(self.gmacs, 4), "macs": self.total, "by_op": self.by_op,
                "precision": "int8" if self.int8 else "fp32", "uncounted": list(self.uncounted)}


def _dims(vi: Any) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return out


def _prod(xs: list[int]) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def _fix_batch(model: Any, batch: int) -> None:
    init = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = inp.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = batch if i == 0 else 1


def count_macs(model: str | os.PathLike[str] | bytes | Any, batch: int = 1) -> MacCount:
    """MACs of one forward pass at ``batch``, divided by ``batch`` (i.e. per sample).

    Args:
        model: a path, serialized bytes, or an ``onnx.ModelProto``.
    Raises:
        InvalidInputError: not a readable ONNX model.
    """
    import onnx

    try:
        if isinstance(model, (str, os.PathLike)):
            m = onnx.load(str(model), load_external_data=Path(model).is_file())
        elif isinstance(model, bytes):
            m = onnx.load_from_string(model)
        else:
            m = onnx.ModelProto()
            m.CopyFrom(model)
    except Exception as exc:
        raise InvalidInputError("cannot read the ONNX model to count its MACs",
                                expected="an ONNX file", found=f"{type(exc).__name__}: {exc}"[:300],
                                code="not-a-model") from None
    _fix_batch(m, batch)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as exc:
        raise InvalidInputError("ONNX shape inference failed; cannot count MACs",
                                found=f"{type(exc).__name__}: {exc}"[:300]) from None
    shapes: dict[str, list[int] | None] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        shapes[vi.name] = _dims(vi)
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    by_op: dict[str, int] = {}
    uncounted: list[str] = []
    int8 = False
    for node in m.graph.node:
        op = node.op_type
        if op in QUANT_OPS:
            int8 = True
        if op not in CONV_OPS and op not in MATMUL_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            uncounted.append(node.name or op)
            continue
        by_op[op] = by_op.get(op, 0) + macs
    total = sum(by_op.values())
    return MacCount(total=total // max(batch, 1), by_op={k: v // max(batch, 1) for k, v in by_op.items()},
                    int8=int8, uncounted=tuple(uncounted))


def _node_macs(node: Any, shapes: dict[str, list[int] | None]) -> int | None:
    op = node.op_type
    ins = list(node.input)
    out = shapes.get(node.output[0])
    if op in CONV_OPS:
        w_name = ins[3] if op == "QLinearConv" else ins[1]
        w = shapes.get(w_name)
        if out is None or w is None:
            return None
        if op == "ConvTranspose":
            x = shapes.get(ins[0])
            if x is None:
                return None
            # each input element scatters into C_out/group * k outputs
            return _prod(x) * _prod(w[1:])
        # output elements x (C_in / group) x kernel: w is (C_out, C_in/group, k...)
        return _prod(out) * _prod(w[1:])
    if op == "Gemm":
        a, b = shapes.get(ins[0]), shapes.get(ins[1])
        if a is None or b is None or out is None:
            return None
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return _prod(out) * k
    a_name = ins[0]
    a = shapes.get(a_name)
    if a is None or out is None:
        return None
    return _prod(out) * a[-1]
