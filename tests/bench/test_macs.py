"""MAC counting from ONNX graphs, checked against hand-computed figures."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.bench.macs import count_macs
from edgemed.errors import InvalidInputError


def _conv_gemm_model(batch_dim: object = "N"):
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((8, 2, 3, 3), np.float32), "w2")  # group=4
    wg = numpy_helper.from_array(np.zeros((2, 8), np.float32), "wg")
    wm = numpy_helper.from_array(np.zeros((8, 8), np.float32), "wm")
    shape = numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),           # 8x16x16
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "wm"], ["m"]),
        helper.make_node("Gemm", ["m", "wg"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [batch_dim, 1, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 2])],
                          [w1, w2, wg, wm, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_counts_conv_grouped_conv_matmul_gemm() -> None:
    mc = count_macs(_conv_gemm_model())
    conv1 = 8 * 16 * 16 * 1 * 9
    conv2 = 8 * 8 * 8 * 2 * 9
    assert mc.by_op == {"Conv": conv1 + conv2, "MatMul": 64, "Gemm": 16}
    assert mc.total == conv1 + conv2 + 64 + 16
    assert not mc.int8 and mc.uncounted == ()


def test_per_sample_at_any_batch(tmp_path) -> None:
    import onnx

    p = tmp_path / "m.onnx"
    onnx.save(_conv_gemm_model(), str(p))
    assert count_macs(p, batch=4).total == count_macs(p, batch=1).total
    assert count_macs(p.read_bytes()).to_dict()["precision"] == "fp32"


def test_qdq_graph_is_int8_with_the_same_macs(tmp_path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantType,
        quantize_static,
    )

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_conv_gemm_model(), str(src))
    data = iter([{"x": np.random.default_rng(i).standard_normal((1, 1, 16, 16)).astype(np.float32)}
                 for i in range(4)])

    class R(CalibrationDataReader):
        def get_next(self):
            return next(data, None)

    quantize_static(str(src), str(dst), R(), activation_type=QuantType.QUInt8)
    q = count_macs(dst)
    assert q.int8 and q.total == count_macs(src).total


def test_not_a_model_is_a_typed_error(tmp_path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_text("not onnx")
    with pytest.raises(InvalidInputError) as e:
        count_macs(bad)
    assert e.value.code == "not-a-model"
