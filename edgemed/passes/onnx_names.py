"""Shorten an ONNX graph's internal names (a few percent of a quantized model's bytes).

A QDQ DenseNet-121 carries ~1,300 nodes whose exported names
(``/features/denseblock3/denselayer9/layers/conv1/Conv_output_0_QuantizeLinear``...) took 0.4 MB
of its 7.7 MB. Graph inputs and outputs keep their names; everything else becomes ``t<i>`` /
``n<i>``. Computation is unchanged (same nodes, same order, same tensors).
"""

from __future__ import annotations

from typing import Any


def compact_names(model: Any) -> Any:
    """Rename initializers, intermediate tensors and nodes in place; return ``model``."""
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    for init in g.initializer:
        init.name = short(init.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.doc_string = ""
        for j, name in enumerate(node.input):
            node.input[j] = short(name)
        for j, name in enumerate(node.output):
            node.output[j] = short(name)
    for vi in g.value_info:
        vi.name = short(vi.name)
    model.doc_string = ""
    return model
