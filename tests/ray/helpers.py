"""Small models and data for the Ray tests (seeded, local)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed_runtime import PreprocessSpec

SPEC = PreprocessSpec(window=(40.0, 400.0), size=(8, 8))


def tiny_onnx(path: Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """A 1x1x8x8 -> 2 logits MLP (Flatten, MatMul, Relu, MatMul) with dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((64, hidden)) * 0.2).astype(np.float32), "W1")
    w2 = numpy_helper.from_array((rng.standard_normal((hidden, 2)) * 0.2).astype(np.float32), "W2")
    g = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("MatMul", ["f", "W1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def int8_of(src: Path, dst: Path) -> Path:
    """onnxruntime's dynamic INT8 quantization of ``src`` (a real compressed candidate)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def dicom_set(folder: Path, n: int, *, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """``n`` synthetic labelled CT slices (16x16) as DICOM files, and their labels."""
    from edgemed.data.synthetic import make_dataset

    per = 20
    s = make_dataset(folder, n_patients=-(-n // per), slices_per_patient=per, size=16, seed=seed)
    paths, labels = list(s.paths)[:n], np.asarray(s.labels)[:n]
    return [Path(p) for p in paths], labels
