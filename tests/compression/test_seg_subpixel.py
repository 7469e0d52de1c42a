"""subpixel_deconv: stride-2 ConvTranspose -> Conv + pixel shuffle gives the same outputs (2D and
3D, dynamic spatial sizes), leaves other ConvTransposes alone, and after NNCF every convolution
is quantized (the rewritten ones included) with outputs close to FP32."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _export(net: Any, shape: tuple[int, ...], path: Path) -> Path:
    import torch

    d = len(shape) - 2
    dyn = {n: {0: "b", **{2 + k: f"s{k}" for k in range(d)}} for n in ("input", "logits")}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(shape),), buf, opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"], dynamic_axes=dyn)
    path.write_bytes(buf.getvalue())
    return path


def _unet3d() -> Any:
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 8), strides=(2, 2),
                num_res_units=1, norm="instance")


def _ort(path: Path | bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    src = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _run_pass(src: Path, tmp: Path) -> Any:
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    from edgemed.passes.base import BuildContext, get_pass_class

    art = Artifact(path=src.parent, format="onnx", model_file=src.name,
                   io=IOSpec(input_shape=(1, 1, 16, 16, 16), dynamic_spatial=True))
    return get_pass_class("subpixel_deconv")()(art, tmp / "sp", BuildContext())


def _ops(path: Path) -> Counter[str]:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _int8_input(op: Any, port: int) -> bool:
    """Whether input ``port`` of ``op`` comes quantized: a FakeQuantize, int8 weights
    (Multiply <- Convert <- i8 Constant), or a Concat of quantized tensors."""
    src = op.input(port).get_source_output().get_node()
    kind = src.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Multiply":
        return src.input(0).get_source_output().get_node().get_type_name() == "Convert"
    if kind == "Concat":
        return all(_int8_input(src, k) for k in range(src.get_input_size()))
    return False


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("subpixel")
    src = _export(_unet3d(), (1, 1, 16, 16, 16), tmp / "unet.onnx")
    return src, _run_pass(src, tmp)


def test_3d_unet_same_outputs_at_other_sizes(unet: tuple[Path, Any]) -> None:
    src, out = unet
    before, after = _ops(src), _ops(out.model_path)
    assert before["ConvTranspose"] == 2 and after["ConvTranspose"] == 0
    assert after["Conv"] == before["Conv"] + 2
    assert out.provenance[-1]["convtranspose_rewritten"] == 2
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 16, 16, 16), (2, 1, 24, 16, 32)]:
        x = rng.normal(size=shape).astype(np.float32)
        want, got = _ort(src, x), _ort(out.model_path, x)
        assert got.shape == want.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_2d_rewritten_and_other_convtranspose_kept(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),  # rewritten
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(5, 4, 2, stride=2),  # kernel 2: left as it is
    )
    src = _export(net, (1, 3, 8, 8), tmp_path / "m.onnx")
    out = _run_pass(src, tmp_path)
    assert _ops(out.model_path)["ConvTranspose"] == 1
    assert out.provenance[-1]["convtranspose_rewritten"] == 1
    x = np.random.default_rng(2).normal(size=(3, 3, 8, 12)).astype(np.float32)
    want, got = _ort(src, x), _ort(out.model_path, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_no_convtranspose_is_a_copy(tmp_path: Path) -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    src = _export(net, (1, 1, 8, 8, 8), tmp_path / "c.onnx")
    out = _run_pass(src, tmp_path)
    assert out.provenance[-1]["convtranspose_rewritten"] == 0
    assert _ops(out.model_path) == _ops(src)


def test_nncf_quantizes_every_conv_after_the_rewrite(unet: tuple[Path, Any], tmp_path: Path) -> None:
    """After the rewrite NNCF puts a weight quantizer on every convolution (none is left as a
    transposed convolution) and the INT8 model stays close to FP32."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import edgemed_runtime as rt

    from edgemed.passes.base import BuildContext, get_pass_class

    src, sp = unet
    rng = np.random.default_rng(3)
    calib = rng.normal(size=(8, 1, 16, 16, 16)).astype(np.float32)
    ctx = BuildContext(calibration=calib, seed=0)
    q = get_pass_class("quantize_openvino")({"overflow_fix": "enable"})(sp, tmp_path / "q", ctx)
    from edgemed_runtime.backends.openvino import import_openvino, read_model

    ov = import_openvino()
    model = read_model(ov.Core(), q.model_path.read_bytes())
    types = Counter(o.get_type_name() for o in model.get_ops())
    assert types["ConvolutionBackpropData"] == 0 and types["Convolution"] == _ops(src)["Conv"] + 2
    convs = [o for o in model.get_ops() if o.get_type_name() == "Convolution"]
    assert all(_int8_input(c, 0) and _int8_input(c, 1) for c in convs)  # activations, weights
    x = calib[:2]
    with rt.open_artifact(q.evolve(backend="openvino"), options={"threads": 1}) as sess:
        got = sess.run({"input": x})["logits"]
    want = _ort(src, x)
    cos = float(np.dot(got.ravel(), want.ravel())
                / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.98, cos
