"""Standalone BatchNormalization -> depthwise 1x1 Conv before onnxruntime INT8 quantization:
exact in FP32, BNs in any other position or rank left alone, and an INT8 graph with no FP32 BN."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemed.passes.base import BuildContext
from edgemed.passes.export_onnx import ExportOnnx
from edgemed.passes.quantize.batchnorm import batchnorm_to_conv
from edgemed.passes.quantize.onnxruntime import QuantizeOnnxRuntime
from edgemed_runtime.artifact import Artifact
from edgemed_runtime.iospec import IOSpec

from tests.helpers.tiny_models import make_preact

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _bn_graph() -> onnx.ModelProto:
    """x(N,3,5,5) -> BN (params via Identity) -> Relu -> Flatten -> BN over (N,75) -> y."""
    rng = np.random.default_rng(0)

    def bn_params(prefix: str, c: int) -> list[onnx.TensorProto]:
        vals = [rng.normal(0, 1, c), rng.normal(0, 1, c), rng.normal(0, 1, c),
                rng.uniform(0.1, 2, c)]
        return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}{k}")
                for k, v in zip("gbmv", vals)]

    nodes = [helper.make_node("Identity", ["p_g"], ["p_g_id"]),
             helper.make_node("BatchNormalization", ["x", "p_g_id", "p_b", "p_m", "p_v"], ["bn"],
                              name="bn4d", epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("BatchNormalization", ["f", "q_g", "q_b", "q_m", "q_v"], ["y"],
                              name="bn2d")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 75])],
                          bn_params("p_", 3) + bn_params("q_", 75))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(m)


def test_rank4_bn_becomes_exact_depthwise_conv_rank2_left_alone() -> None:
    m = _bn_graph()
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(np.float32)
    ref = _run(m, x)
    assert batchnorm_to_conv(m) == 1
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("BatchNormalization") == 1 and "Conv" in ops  # the (N, 75) one stays
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    assert {a.name: helper.get_attribute_value(a) for a in conv.attribute}["group"] == 3
    np.testing.assert_allclose(_run(m, x), ref, rtol=1e-5, atol=1e-5)
    used = {i for n in m.graph.node for i in n.input}
    assert all(t.name in used for t in m.graph.initializer), "BN parameters left behind"


def test_keep_changes_nothing() -> None:
    m = _bn_graph()
    before = m.SerializeToString()
    assert batchnorm_to_conv(m, "keep") == 0
    assert m.SerializeToString() == before


@pytest.fixture(scope="module")
def preact_fp32(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    d = tmp_path_factory.mktemp("preact")
    src = Artifact(path=d, format="torch", model_file="", io=IOSpec(input_shape=(1, 1, 16, 16)),
                   payload=make_preact())
    return ExportOnnx()(src, d, BuildContext())


@pytest.mark.parametrize("mode", ["conv", "keep"])
def test_quantize_pass_int8_graph(preact_fp32: Artifact, tmp_path: Path, mode: str) -> None:
    """With ``conv`` (the default) the INT8 graph has no FP32 BatchNormalization left and every
    BN became a per-channel QDQ Conv; its outputs stay as close to FP32 as with ``keep``."""
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 1, 16, 16)).astype(np.float32)
    x = rng.standard_normal((16, 1, 16, 16)).astype(np.float32)
    fp32 = onnx.load(str(preact_fp32.model_path))
    assert sum(n.op_type == "BatchNormalization" for n in fp32.graph.node) == 3
    settings = {} if mode == "conv" else {"batchnorm": "keep"}
    art = QuantizeOnnxRuntime(settings)(preact_fp32, tmp_path, BuildContext(calibration=calib))
    q = onnx.load(str(art.model_path))
    n_bn = sum(n.op_type == "BatchNormalization" for n in q.graph.node)
    rec = art.provenance[-1]
    ref = _run(fp32, x)
    diff = np.abs(_run(q, x) - ref).max()
    assert diff < 0.1 * np.abs(ref).max() + 1e-3, diff
    if mode == "keep":
        assert n_bn == 3 and rec["batchnorm_to_depthwise_conv"] == 0
        return
    assert n_bn == 0 and rec["batchnorm_to_depthwise_conv"] == 3
    depthwise = [n for n in q.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) == 3
    producers = {o: n for n in q.graph.node for o in n.output}
    for n in depthwise:  # weights are INT8 behind a per-channel DequantizeLinear
        assert producers[n.input[1]].op_type == "DequantizeLinear"


def _fused_ops(path: Path, tmp: Path) -> list[str]:
    """The op types of the graph onnxruntime runs, after its optimisations (QDQ fusion)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node]


@pytest.mark.parametrize("quantize_bias", [True, False])
def test_every_conv_fuses_to_qlinearconv(preact_fp32: Artifact, tmp_path: Path,
                                         quantize_bias: bool) -> None:
    """Zero points dropped from Conv weights/biases, and float biases (``quantize_bias=false``):
    onnxruntime still runs every Conv, the BN ones included, as QLinearConv; same outputs."""
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 1, 16, 16)).astype(np.float32)
    x = rng.standard_normal((8, 1, 16, 16)).astype(np.float32)
    ref = QuantizeOnnxRuntime({})(preact_fp32, tmp_path / "ref", BuildContext(calibration=calib))
    art = QuantizeOnnxRuntime({"quantize_bias": quantize_bias})(
        preact_fp32, tmp_path / "q", BuildContext(calibration=calib))
    q = onnx.load(str(art.model_path))
    producers = {o: n for n in q.graph.node for o in n.output}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    for n in convs:
        for i in n.input[1:]:
            dq = producers.get(i)
            assert dq is None or len(dq.input) == 2, "zero point of a Conv input left in"
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    bias_types = {inits[producers[n.input[2]].input[0]].dtype if n.input[2] in producers
                  else inits[n.input[2]].dtype for n in convs if len(n.input) > 2}
    assert bias_types == ({np.dtype(np.int32)} if quantize_bias else {np.dtype(np.float32)})
    ops = _fused_ops(art.model_path, tmp_path)
    assert ops.count("QLinearConv") == len(convs) == 6 and "Conv" not in ops
    np.testing.assert_allclose(_run(q, x), _run(onnx.load(str(ref.model_path)), x), atol=1e-4)


def test_dropping_conv_zero_points_keeps_outputs_bit_identical(preact_fp32: Artifact,
                                                               tmp_path: Path) -> None:
    """The pass's output with the zero points put back (onnxruntime's quantizer as is) and as
    written (dropped) give the same bits; only Conv inputs lost them."""
    from edgemed.passes.quantize.zero_points import drop_zero_points

    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 1, 16, 16)).astype(np.float32)
    x = rng.standard_normal((8, 1, 16, 16)).astype(np.float32)
    art = QuantizeOnnxRuntime({})(preact_fp32, tmp_path, BuildContext(calibration=calib))
    dropped = onnx.load(str(art.model_path))
    assert art.provenance[-1]["zero_points_dropped"] > 0
    restored = onnx.ModelProto()
    restored.CopyFrom(dropped)
    producers = {o: n for n in restored.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in restored.graph.initializer}
    added = 0
    for conv in (n for n in restored.graph.node if n.op_type == "Conv"):
        for i in conv.input[1:]:
            dq = producers.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) == 2:
                w = inits[dq.input[0]]
                zp = numpy_helper.from_array(np.zeros(inits[dq.input[1]].shape, w.dtype),
                                             f"{dq.input[0]}/zero_point")
                restored.graph.initializer.append(zp)
                dq.input.append(zp.name)
                added += 1
    assert added == art.provenance[-1]["zero_points_dropped"]
    np.testing.assert_array_equal(_run(restored, x), _run(dropped, x))
    assert drop_zero_points(restored) == added  # and the function takes them out again
    assert all(len(producers[i].input) == 2 for n in restored.graph.node if n.op_type == "Conv"
               for i in n.input[1:] if producers.get(i) is not None
               and producers[i].op_type == "DequantizeLinear")
