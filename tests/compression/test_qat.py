"""QAT: fake-quantised fine-tuning exported as an INT8 QDQ ONNX model that onnxruntime runs."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.errors import CalibrationError
from edgemed.passes.base import BuildContext, get_pass_class


def test_qat_exports_qdq_int8_that_keeps_accuracy(torch_artifact, ctx, tmp_path, task32):
    import onnx
    import onnxruntime as ort

    from compress_helpers import accuracy

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
    s = ort.InferenceSession(str(out.model_path), providers=["CPUExecutionProvider"])
    x, y = task32[2]
    logits = s.run(None, {s.get_inputs()[0].name: x})[0]
    assert (logits.argmax(1) == y).mean() >= accuracy(task32[0], task32[2]) - 0.05


def test_qat_needs_calibration(torch_artifact, tmp_path):
    with pytest.raises(CalibrationError):
        get_pass_class("qat")({"epochs": 0})(torch_artifact, tmp_path, BuildContext())
