"""OpenVINO shape specialisation for dynamic-spatial (segmentation) models: each new window shape
gets a static compile, at most ``static_shapes`` of them; results match the dynamic compile and
onnxruntime FP32."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino")


def _tiny_unet_onnx() -> bytes:
    """A small MONAI 3D UNet (InstanceNorm + PReLU, one transposed conv) as ONNX bytes, every
    spatial axis dynamic (as export_onnx writes segmentation models)."""
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
               num_res_units=1, norm="instance").eval()
    dyn = {n: {0: "b", 2: "s0", 3: "s1", 4: "s2"} for n in ("input", "logits")}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 16, 16, 16),), buf, opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes=dyn)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model() -> bytes:
    return _tiny_unet_onnx()


def _open(model: bytes, **options: Any) -> Any:
    from edgemed_runtime.backends.base import get_backend
    from edgemed_runtime.iospec import IOSpec

    io_spec = IOSpec(input_shape=(1, 1, 16, 16, 16), dynamic_spatial=True)
    return get_backend("openvino").open(model, io_spec, {"threads": 1, **options})


def _ort(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_window_shapes_compile_static_up_to_the_limit(model: bytes) -> None:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    last = full[:1]
    other = rng.normal(size=(1, 1, 16, 24, 16)).astype(np.float32)
    sess = _open(model, static_shapes=2)
    dyn = _open(model, static_shapes=0)
    try:
        outs = [sess.run({"input": a})[0] for a in (full, last, full, other)]
        assert sess.details["static_shapes"] == [["2x1x16x16x16"], ["1x1x16x16x16"]]
        assert "static_shapes" not in dyn.details
        for a, got in zip((full, last, full, other), outs):
            want = dyn.run({"input": a})[0]
            assert got.shape == want.shape == (a.shape[0], 3, *a.shape[2:])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(got, _ort(model, a), rtol=1e-3, atol=1e-3)
    finally:
        sess.close()
        dyn.close()


def test_static_shapes_option_is_checked(model: bytes) -> None:
    from edgemed_runtime import BackendError

    with pytest.raises(BackendError) as err:
        _open(model, static_shapes=-1)
    assert err.value.code == "bad-option"


def test_sliding_window_through_the_static_session_matches_dynamic(model: bytes) -> None:
    """The device's sliding window (3 windows: a batch of 2, then 1) gives the same
    volume on the static compiles as on the dynamic one."""
    from edgemed_runtime import InferenceSpec
    from edgemed_runtime.inference.sliding_window import sliding_window

    spec = InferenceSpec(mode="sliding_window", roi_size=(16, 16, 16), overlap=0.25,
                         sw_batch_size=2)
    x = np.random.default_rng(1).normal(size=(1, 1, 16, 16, 40)).astype(np.float32)
    sess, dyn = _open(model), _open(model, static_shapes=0)
    try:
        got = sliding_window(x, lambda w: sess.run({"input": w})[0], spec)
        want = sliding_window(x, lambda w: dyn.run({"input": w})[0], spec)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert len(sess.details["static_shapes"]) == 2  # full batches and the last one
    finally:
        sess.close()
        dyn.close()
