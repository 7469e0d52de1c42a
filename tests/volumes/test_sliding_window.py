"""edgemed_runtime.inference.sliding_window against MONAI's sliding_window_inference.

The same small MONAI 3D UNet (seeded, eval mode) runs in torch under MONAI's function and, exported
to ONNX with dynamic batch and spatial axes, in onnxruntime under ours: max |diff| <= 1e-4 (issue
15's bar), for gaussian and constant blending, overlaps 0.5 and 0.25, 1 or 4 windows a call, a
volume smaller than the ROI (padded and cropped back), and 2D. The window plan and importance map
are also checked piece by piece against MONAI's own functions.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_inferers = pytest.importorskip("monai.inferers")
ort = pytest.importorskip("onnxruntime")

from monai.data.utils import compute_importance_map, dense_patch_slices  # noqa: E402
from monai.inferers.utils import _get_scan_interval  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402

from edgemed_runtime import Artifact, InferenceSpec, InvalidInputError, IOSpec  # noqa: E402
from edgemed_runtime.inference import sliding_window  # noqa: E402
from edgemed_runtime.inference.sliding_window import (  # noqa: E402
    importance_map,
    scan_intervals,
    window_count,
    window_starts,
)

BAR = 1e-4
ULP = float(np.spacing(np.float32(1.0)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch on one thread (onnxruntime too, in ``_ort_predictor``): a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unet(spatial_dims: int) -> Any:
    torch.manual_seed(0)
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=3, channels=(8, 16, 32),
                strides=(2, 2), num_res_units=1).eval()


def _export(net: Any, example_shape: tuple[int, ...]) -> bytes:
    """ONNX (opset 17, TorchScript exporter) with dynamic batch and spatial axes."""
    spatial = {i: f"s{i}" for i in range(2, len(example_shape))}
    axes = {"input": {0: "batch", **spatial}, "output": {0: "batch", **spatial}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(example_shape),), buf, opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return buf.getvalue()


def _ort_predictor(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def unet3d() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    net = _unet(3)
    return net, _ort_predictor(_export(net, (1, 1, 32, 32, 32)))


@pytest.fixture(scope="module")
def unet2d() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    net = _unet(2)
    return net, _ort_predictor(_export(net, (1, 1, 32, 32)))


def _volume(*spatial: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 1, *spatial)).astype(np.float32)


def _monai(net: Any, x: np.ndarray, spec: InferenceSpec) -> np.ndarray:
    with torch.no_grad():
        out = monai_inferers.sliding_window_inference(
            torch.from_numpy(x), spec.roi_size, spec.sw_batch_size, net, overlap=spec.overlap,
            mode=spec.blend, sigma_scale=spec.sigma_scale, padding_mode=spec.padding_mode,
            cval=spec.cval)
    return out.numpy()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == np.float32
    return float(np.abs(a - b).max())


# -- the pieces, against MONAI's own functions ------------------------------------------------

@pytest.mark.parametrize("roi", [(32, 32, 32), (7, 9, 12), (5, 6), (1, 3, 4), (64, 48)])
@pytest.mark.parametrize("sigma", [0.125, 0.3, 0.01])
def test_importance_map_is_monais_within_one_ulp(roi: tuple[int, ...], sigma: float) -> None:
    ref = compute_importance_map(roi, mode="gaussian", sigma_scale=sigma).numpy()
    ours = importance_map(roi, "gaussian", sigma)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= ULP
    assert ours.min() >= 1e-3 and ours.max() <= 1.0
    const = importance_map(roi, "constant", sigma)
    np.testing.assert_array_equal(const, compute_importance_map(roi, mode="constant").numpy())


def test_window_plan_is_monais_on_random_shapes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(80):
        nd = int(rng.integers(2, 4))
        image = tuple(int(v) for v in rng.integers(1, 60, nd))
        roi = tuple(int(v) for v in rng.integers(1 if nd == 2 else 4, 40, nd))
        overlap = float(rng.choice([0.0, 0.25, 0.33, 0.5, 0.75, 0.9]))
        padded = tuple(max(a, b) for a, b in zip(image, roi))
        intervals = _get_scan_interval(padded, roi, nd, (overlap,) * nd)
        assert scan_intervals(padded, roi, overlap) == intervals
        ours = [tuple(slice(s, s + r) for s, r in zip(start, roi))
                for start in window_starts(padded, roi, intervals)]
        assert ours == dense_patch_slices(padded, roi, intervals), (image, roi, overlap)
        spec = InferenceSpec(roi_size=roi, overlap=overlap)
        assert window_count(image, spec) == len(ours)


# -- parity on a MONAI 3D UNet: torch under MONAI vs ONNX in onnxruntime under edgemed ----------

@pytest.mark.parametrize("blend, overlap", [("gaussian", 0.5), ("constant", 0.25),
                                            ("gaussian", 0.25)])
def test_unet3d_parity_with_monai(unet3d, blend: str, overlap: float) -> None:
    net, predictor = unet3d
    x = _volume(72, 40, 44)
    spec = InferenceSpec(roi_size=(32, 32, 32), overlap=overlap, blend=blend)
    assert window_count(x.shape[2:], spec) == {0.5: 16, 0.25: 12}[overlap]  # distinct plans
    ours = sliding_window(x, predictor, spec)
    assert ours.shape == (1, 3, 72, 40, 44)
    assert _max_diff(ours, _monai(net, x, spec)) <= BAR


def test_window_batch_size_does_not_change_the_result(unet3d) -> None:
    net, predictor = unet3d
    x = _volume(48, 40, 44, seed=1)
    calls: list[int] = []

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return predictor(batch)

    one, four = (InferenceSpec(roi_size=(32, 32, 32), overlap=0.5, blend="gaussian",
                               sw_batch_size=n) for n in (1, 4))
    a = sliding_window(x, counting, one)
    assert calls == [1] * 8
    calls.clear()
    b = sliding_window(x, counting, four)
    assert calls == [4, 4]
    assert _max_diff(a, b) <= 1e-5  # only onnxruntime's batch-size-dependent rounding
    assert _max_diff(b, _monai(net, x, four)) <= BAR


@pytest.mark.parametrize("padding", ["constant", "replicate", "reflect"])
def test_volume_smaller_than_the_roi_is_padded_as_monai_does(unet3d, padding: str) -> None:
    net, predictor = unet3d
    x = _volume(20, 40, 36, seed=2)  # z below the ROI: padded to 32, then cropped back
    spec = InferenceSpec(roi_size=(32, 32, 32), overlap=0.5, blend="gaussian", sw_batch_size=2,
                         padding_mode=padding, cval=0.5 if padding == "constant" else 0.0)
    ours = sliding_window(x, predictor, spec)
    assert ours.shape == (1, 3, 20, 40, 36) and ours.flags.c_contiguous
    assert _max_diff(ours, _monai(net, x, spec)) <= BAR


def test_unet2d_parity_with_monai(unet2d) -> None:
    net, predictor = unet2d
    x = _volume(72, 52, seed=3)
    for blend, overlap in (("gaussian", 0.5), ("constant", 0.25)):
        spec = InferenceSpec(roi_size=(32, 32), overlap=overlap, blend=blend, sw_batch_size=3)
        assert _max_diff(sliding_window(x, predictor, spec), _monai(net, x, spec)) <= BAR


def test_dynamic_spatial_export_runs_at_two_sizes(unet3d) -> None:
    """The one ONNX file (exported at 32^3) matches torch at other window sizes and whole."""
    net, predictor = unet3d
    x = _volume(40, 48, 40, seed=4)
    for roi in ((24, 24, 24), (16, 32, 24)):
        spec = InferenceSpec(roi_size=roi, overlap=0.5, blend="gaussian", sw_batch_size=2)
        assert _max_diff(sliding_window(x, predictor, spec), _monai(net, x, spec)) <= BAR
    whole = sliding_window(x, predictor, InferenceSpec(mode="whole"))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert _max_diff(whole, ref) <= BAR


def test_pointwise_predictor_gives_its_whole_input_output() -> None:
    """A voxel-wise model gives the same value in every window: the blend returns it (to float32
    rounding) for every blend and padding, also when the predictor's array is read-only."""
    def pointwise(batch: np.ndarray) -> np.ndarray:
        out = np.concatenate([np.tanh(batch), batch * 2.0], axis=1)
        out.flags.writeable = False
        return out

    x = _volume(21, 50, 37, seed=5) * 3.0
    expected = np.concatenate([np.tanh(x), x * 2.0], axis=1)
    for spec in (InferenceSpec(roi_size=(16, 24, 40), overlap=0.6, blend="gaussian",
                               sw_batch_size=3),
                 InferenceSpec(roi_size=(32, 16, 16), overlap=0.0, padding_mode="replicate")):
        out = sliding_window(x, pointwise, spec)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# -- refusals ---------------------------------------------------------------------------------

def test_classification_output_is_refused_unless_whole() -> None:
    def classify(batch: np.ndarray) -> np.ndarray:  # one score per window: (B, classes)
        flat = batch.reshape(batch.shape[0], -1)
        return np.stack([flat.mean(1), flat.std(1)], axis=1)

    x = _volume(40, 40, 40)
    with pytest.raises(InvalidInputError) as err:
        sliding_window(x, classify, InferenceSpec(roi_size=(32, 32, 32)))
    assert err.value.code == "window-output" and "whole" in (err.value.fix or "")
    out = sliding_window(x, classify, InferenceSpec(mode="whole"))
    assert out.shape == (1, 2)


def test_output_of_another_spatial_size_is_refused() -> None:
    with pytest.raises(InvalidInputError) as err:
        sliding_window(_volume(40, 40), lambda b: b[:, :, ::2, ::2],
                       InferenceSpec(roi_size=(32, 32)))
    assert err.value.code == "window-output"
    with pytest.raises(InvalidInputError) as err:
        sliding_window(_volume(40, 40), lambda b: b[:1], InferenceSpec(roi_size=(16, 16),
                                                                       sw_batch_size=4))
    assert err.value.code == "window-output"


@pytest.mark.parametrize("fields, code", [
    ({"roi_size": (0, 32, 32)}, "bad-roi"),
    ({"roi_size": (-1, 32)}, "bad-roi"),
    ({"roi_size": (32,)}, "bad-roi"),
    ({"roi_size": (8, 8, 8, 8)}, "bad-roi"),
    ({"roi_size": (512, 512, 512)}, "bad-roi"),
    ({"roi_size": (8192, 16)}, "bad-roi"),
    ({"roi_size": (32.5, 32)}, "bad-roi"),
    ({"roi_size": "32x32"}, "bad-roi"),
    ({"roi_size": ()}, "bad-roi"),
    ({"roi_size": (32, 32), "overlap": 1.0}, "bad-overlap"),
    ({"roi_size": (32, 32), "overlap": -0.1}, "bad-overlap"),
    ({"roi_size": (32, 32), "overlap": float("nan")}, "bad-overlap"),
    ({"roi_size": (32, 32), "overlap": "0.5"}, "bad-overlap"),
    ({"roi_size": (32, 32), "mode": "tiles"}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "blend": "linear"}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "sigma_scale": 0.0}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "sw_batch_size": 0}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "sw_batch_size": True}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "padding_mode": "circular"}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "cval": float("inf")}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "padding_mode": "reflect", "cval": 1.0}, "bad-inference-spec"),
    ({"roi_size": (32, 32), "version": 2}, "bad-inference-spec"),
])
def test_bad_spec_is_refused(fields: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        InferenceSpec(**fields)
    assert err.value.code == code
    assert err.value.expected


def test_bad_input_is_refused() -> None:
    spec = InferenceSpec(roi_size=(16, 16, 16))
    identity = lambda b: b  # noqa: E731
    for bad in (np.zeros((16, 16, 16), np.float32), np.zeros((1, 1, 16, 16), np.float32),
                np.zeros((1, 1, 0, 16, 16), np.float32), [[1.0]], np.zeros((1, 1, 4, 4, 4), complex)):
        with pytest.raises(InvalidInputError) as err:
            sliding_window(bad, identity, spec)  # type: ignore[arg-type]
        assert err.value.code == "shape"
    nan = _volume(16, 16, 16)
    nan[0, 0, 3, 4, 5] = np.nan
    with pytest.raises(InvalidInputError) as err:
        sliding_window(nan, identity, spec)
    assert err.value.code == "non-finite"
    reflect = InferenceSpec(roi_size=(16, 16, 16), padding_mode="reflect")
    with pytest.raises(InvalidInputError) as err:  # torch refuses reflect pads >= the axis too
        sliding_window(_volume(4, 16, 16), identity, reflect)
    assert err.value.code == "shape"
    with pytest.raises(InvalidInputError) as err:
        sliding_window(_volume(16, 16, 16), identity, {"roi_size": [16, 16, 16]})  # type: ignore
    assert err.value.code == "bad-inference-spec"


def test_predictor_returning_no_array_is_refused() -> None:
    with pytest.raises(InvalidInputError) as err:
        sliding_window(_volume(16, 16), lambda b: {"out": b}, InferenceSpec(roi_size=(16, 16)))
    assert err.value.code == "window-output"


# -- the spec in the artifact -----------------------------------------------------------------

def test_spec_round_trips_through_json_and_the_artifact(tmp_path: Path) -> None:
    spec = InferenceSpec(roi_size=(96, 96, 64), overlap=0.5, blend="gaussian", sigma_scale=0.25,
                         sw_batch_size=4, padding_mode="replicate")
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["roi_size"] == [96, 96, 64] and d["version"] == 1
    assert InferenceSpec.from_dict(d) == spec
    assert InferenceSpec.from_dict({"roi_size": [32, 32]}) == InferenceSpec(roi_size=(32, 32))
    for bad, code in (({"roi_size": [32, 32], "stride": 4}, "bad-inference-spec"),
                      ({"roi_size": [32, 32], "version": 9}, "bad-inference-spec"),
                      ([1, 2], "bad-inference-spec")):
        with pytest.raises(InvalidInputError) as err:
            InferenceSpec.from_dict(bad)  # type: ignore[arg-type]
        assert err.value.code == code

    io_spec = IOSpec(input_shape=(1, 1, 96, 96, 64))
    art = Artifact(path=tmp_path, format="onnx", model_file="model.onnx", io=io_spec,
                   inference=spec)
    art.save()
    assert Artifact.load(tmp_path).inference == spec
    plain = Artifact(path=tmp_path, format="onnx", model_file="model.onnx", io=io_spec)
    assert "inference" not in plain.to_dict()
    plain.save()
    assert Artifact.load(tmp_path).inference is None
