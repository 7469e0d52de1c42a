"""Drop the all-zero zero points of weight and bias DequantizeLinear nodes that feed a Conv.

onnxruntime's quantizer writes an explicit zero point for every DequantizeLinear, including the
symmetric INT8 weights and INT32 biases of each Conv, where it is always 0 and ONNX's default when
left out. On MONAI DenseNet-121 dropping them took 219 KB off a 7.74 MB INT8 model (2.8%).
onnxruntime still fuses the Conv into ``QLinearConv`` without them (outputs bit-identical: a
test); Gemm/MatMul weights are left alone, as onnxruntime does not fuse those to ``QGemm`` then.
"""

from __future__ import annotations

from typing import Any

from ..onnx_graph import drop_unused_initializers


def drop_zero_points(model: Any) -> int:
    """Remove all-zero constant zero points of DequantizeLinear nodes whose output feeds only Conv
    nodes, in place (``model``: an ``onnx.ModelProto``). Returns how many were removed."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    removed = 0
    for n in graph.node:
        if (n.op_type != "DequantizeLinear" or len(n.input) != 3 or n.input[0] not in inits
                or n.input[2] not in inits or set(readers.get(n.output[0], ["?"])) != {"Conv"}):
            continue
        if numpy_helper.to_array(inits[n.input[2]]).any():
            continue
        del n.input[2]
        removed += 1
    if removed:
        drop_unused_initializers(graph)
    return removed
