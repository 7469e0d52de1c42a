"""QAT: fake-quantised fine-tuning exported as an INT8 QDQ ONNX model that onnxruntime runs."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.errors import CalibrationError
from edgemed.passes.base import BuildContext, get_pass_class


def test_qat_exports_qdq_int8_that_keeps_accuracy(torch_artifact, ctx, tmp_path, task32):
    import onnx
    import onnxruntime as ort

    from tests.helpers.compress_helpers import accuracy

    out = get_pass_class("qat")({"epochs": 1})(torch_artifact, tmp_path, ctx)
    assert out.format == "onnx-qdq" and out.payload is None
    rec = out.provenance[-1]
    assert rec["parity"]["cosine"] > 0.99 and rec["finetune"]["epochs_run"] == 1
    n_weights = sum(p.numel() for n, p in task32[0].named_parameters() if n.endswith("weight")
                    and p.ndim > 1)
    assert rec["int8_weights"] >= 0.95 * n_weights  # stored as INT8 initializers
    assert out.model_path.stat().st_size < 2 * n_weights  # ~1 byte a weight, not 4
    ops = {n.op_type for n in onnx.load(str(out.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the model's numerics (Q/DQ simulated in float), the same on every CPU
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(out.model_path), so, providers=["CPUExecutionProvider"])
    x, y = task32[2]
    logits = s.run(None, {s.get_inputs()[0].name: x})[0]
    assert (logits.argmax(1) == y).mean() >= accuracy(task32[0], task32[2]) - 0.05


def test_qat_reduce_range_runs_alike_on_this_cpus_kernels(torch_artifact, ctx, tmp_path, task32):
    """7-bit weights: this host's fused integer kernels give what the simulation gives, on any
    x86 CPU (with or without VNNI)."""
    import onnx
    import onnxruntime as ort

    from edgemed.passes.export_onnx import cosine

    out = get_pass_class("qat")({"epochs": 1, "reduce_range": True})(torch_artifact, tmp_path, ctx)
    m = onnx.load(str(out.model_path))
    w8 = [onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.data_type == 3]
    assert w8 and all(-64 <= int(w.min()) and int(w.max()) <= 64 for w in w8)  # 2*255*64 < 2**15
    x = task32[2][0]
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        s = ort.InferenceSession(str(out.model_path), so, providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x})[0])
    assert cosine(outs[0], outs[1]) > 0.99


def test_qat_needs_calibration(torch_artifact, tmp_path):
    with pytest.raises(CalibrationError):
        get_pass_class("qat")({"epochs": 0})(torch_artifact, tmp_path, BuildContext())
