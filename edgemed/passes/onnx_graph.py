"""Small helpers shared by the passes that edit ONNX graphs."""

from __future__ import annotations

from typing import Any


def drop_unused_initializers(graph: Any) -> int:
    """Remove the initializers of ``graph`` (an ``onnx.GraphProto``) that no node or output reads,
    in place; returns how many. A graph with subgraphs (If, Loop, Scan) is left alone: those may
    read outer initializers."""
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return 0
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    dropped = len(graph.initializer) - len(keep)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped
