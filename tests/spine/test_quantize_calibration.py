"""INT8 QDQ quantization (types, per-channel, calibration methods) and calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemed.calibration import sample_calibration, to_arrays
from edgemed.errors import CalibrationError
from edgemed.passes.base import BuildContext
from edgemed.passes.export_onnx import ExportOnnx
from edgemed.passes.quantize.onnxruntime import QuantizeOnnxRuntime
from edgemed_runtime.artifact import Artifact
from edgemed_runtime.iospec import IOSpec
from edgemed_runtime.preprocess import PreprocessSpec

from tests.helpers.tiny_models import make_net

IO = IOSpec(input_shape=(1, 1, 16, 16))


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    d = tmp_path_factory.mktemp("fp32")
    src = Artifact(path=d, format="torch", model_file="", io=IO, payload=make_net())
    return ExportOnnx()(src, d, BuildContext())


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((32, 1, 16, 16)).astype(np.float32)
    x[0, 0, 0, 0] = 40.0  # one outlier: clipping methods must cut it, minmax must not
    return x


def _quantize(fp32: Artifact, calib: np.ndarray, tmp: Path, **cfg: object) -> onnx.ModelProto:
    art = QuantizeOnnxRuntime(cfg)(fp32, tmp, BuildContext(calibration=calib))
    assert art.format == "onnx-qdq"
    return onnx.load(str(art.model_path))


def _act_scales(m: onnx.ModelProto) -> dict[str, float]:
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_qdq_u8s8_per_channel(fp32: Artifact, calib: np.ndarray, tmp_path: Path) -> None:
    m = _quantize(fp32, calib, tmp_path, activation_type="uint8", weight_type="int8")
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and all(inits[n.input[2]].dtype == np.uint8 for n in qs)
    weight_dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert weight_dq, "conv weights must be stored as int8"
    assert all(inits[n.input[1]].size > 1 for n in weight_dq), "per-channel scales expected"


def test_s8s8_activation_type(fp32: Artifact, calib: np.ndarray, tmp_path: Path) -> None:
    m = _quantize(fp32, calib, tmp_path, activation_type="int8", weight_type="int8")
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[2]].dtype == np.int8 for n in qs)


def test_activation_clipping_methods_clip_outliers(fp32: Artifact, calib: np.ndarray,
                                                   tmp_path: Path) -> None:
    extra = {"percentile": {"percentile": 99.9}}
    scales = {meth: _act_scales(_quantize(fp32, calib, tmp_path / meth, calibration=meth,
                                          **extra.get(meth, {})))
              for meth in ("minmax", "percentile", "entropy")}
    # minmax covers the 40.0 input outlier; percentile clips it; entropy clips activations
    assert scales["minmax"]["input"] * 255 >= 40.0
    assert scales["percentile"]["input"] < scales["minmax"]["input"] * 0.5
    assert sum(scales["entropy"].values()) < 0.9 * sum(scales["minmax"].values())


def test_keep_fp32_op_types(fp32: Artifact, calib: np.ndarray, tmp_path: Path) -> None:
    m = _quantize(fp32, calib, tmp_path, keep_fp32_op_types=("Gemm",))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    producers = {o: n.op_type for n in m.graph.node for o in n.output}
    assert producers.get(gemm.input[1]) != "DequantizeLinear"


def test_no_calibration_data(fp32: Artifact, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="calibration data"):
        QuantizeOnnxRuntime()(fp32, tmp_path, BuildContext(calibration=None))


SPEC = PreprocessSpec(size=(16, 16))


def test_sampling_is_deterministic_and_recorded(calib: np.ndarray) -> None:
    a = sample_calibration(calib, IO, SPEC, count=8, seed=1)
    b = sample_calibration(calib, IO, SPEC, count=8, seed=1)
    c = sample_calibration(calib, IO, SPEC, count=8, seed=2)
    assert a.sha256 == b.sha256 != c.sha256
    assert a.info()["count"] == 8 and a.info()["seed"] == 1 and a.info()["available"] == 32


def test_npy_npz_folder_and_iterable_sources(calib: np.ndarray, tmp_path: Path,
                                             synthetic_dir: Path) -> None:
    np.save(tmp_path / "a.npy", calib[:4])
    np.savez(tmp_path / "b.npz", x=calib[4:6])
    assert len(to_arrays(tmp_path / "a.npy", IO, SPEC).x) == 4
    assert len(to_arrays(tmp_path, IO, SPEC).x) == 6  # folder of .npy/.npz
    assert len(to_arrays(iter(calib[:3]), IO, SPEC).x) == 3
    dicom = to_arrays(synthetic_dir, IO, SPEC, what="validation")
    assert dicom.x.shape == (64, 1, 16, 16) and dicom.y is not None
    calib = to_arrays(synthetic_dir, IO, SPEC)  # calibration: every file, labels ignored
    assert calib.x.shape == dicom.x.shape and calib.y is None


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (np.zeros((0, 1, 16, 16), np.float32), "empty"),
        (np.zeros((4, 1, 8, 8), np.float32), "wrong shape"),
        ([np.zeros((1, 16, 16)), np.zeros((1, 8, 8))], "item 1 has the wrong shape"),
        ([], "empty"),
    ],
)
def test_bad_calibration_sets(source: object, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        to_arrays(source, IO, SPEC)


def test_non_finite_item_is_named(calib: np.ndarray) -> None:
    bad = calib.copy()
    bad[5, 0, 3, 3] = np.nan
    with pytest.raises(CalibrationError) as ei:
        to_arrays(bad, IO, SPEC)
    assert "item 5" in ei.value.message and ei.value.code == "non-finite"


def test_compact_names_shrinks_file_and_keeps_outputs(fp32: Artifact, calib: np.ndarray,
                                                      tmp_path: Path) -> None:
    import onnxruntime as ort

    long = QuantizeOnnxRuntime({"compact_names": False})(fp32, tmp_path / "a",
                                                         BuildContext(calibration=calib))
    short = QuantizeOnnxRuntime({"compact_names": True})(fp32, tmp_path / "b",
                                                         BuildContext(calibration=calib))
    assert short.model_path.stat().st_size < long.model_path.stat().st_size
    m = onnx.load(str(short.model_path))
    assert [i.name for i in m.graph.input] == ["input"] and m.graph.output[0].name == "logits"
    assert all(n.name.startswith("n") for n in m.graph.node)
    x = calib[:4]
    run = lambda a: ort.InferenceSession(str(a.model_path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_array_equal(run(short), run(long))
