"""Intake and export of MONAI segmentation networks (issue 16 item 2), 2D and 3D, at opset 17.

Fully convolutional nets (UNet, SegResNet) export with dynamic spatial dims, checked against
PyTorch at the example size and at a second size. Nets that only run at their ROI (UNETR: learned
positional embeddings of a fixed patch grid; SwinUNETR: shifted-window attention masks the
TorchScript exporter traces as constants) are exported at the ROI, which sliding-window inference
feeds exclusively; without such an inference spec they are refused (``fixed-size-model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgemed_runtime as rt
from edgemed.errors import ExportError
from edgemed.passes.base import BuildContext
from edgemed.passes.export_onnx import ExportOnnx

nets = pytest.importorskip("monai.networks.nets")


def _export(net: Any, shape: tuple[int, ...], tmp_path: Path, inference: Any = None) -> rt.Artifact:
    torch.manual_seed(0)
    io = rt.IOSpec(input_shape=shape, dynamic_spatial=True)
    src = rt.Artifact(path=tmp_path, format="torch", model_file="", io=io, payload=net.eval(),
                      task=rt.TaskSpec("segmentation"), inference=inference)
    return ExportOnnx()(src, tmp_path / "export", BuildContext(threads=1))


def _record(art: rt.Artifact) -> dict[str, Any]:
    return next(r for r in art.provenance if r["pass"] == "export_onnx")


@pytest.mark.parametrize("name,make,shape", [
    ("UNet 3D", lambda: nets.UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1), (1, 1, 32, 32, 32)),
    ("UNet 2D", lambda: nets.UNet(2, 1, 3, (8, 16, 32), (2, 2), num_res_units=1), (1, 1, 64, 64)),
    ("SegResNet 3D", lambda: nets.SegResNet(spatial_dims=3, init_filters=8, in_channels=1,
                                            out_channels=3), (1, 1, 32, 32, 32)),
    ("SegResNet 2D", lambda: nets.SegResNet(spatial_dims=2, init_filters=8, in_channels=1,
                                            out_channels=3), (1, 1, 64, 64)),
])
def test_fully_convolutional_nets_export_with_dynamic_spatial_dims(
        name: str, make: Any, shape: tuple[int, ...], tmp_path: Path) -> None:
    torch.manual_seed(0)
    art = _export(make(), shape, tmp_path)
    rec = _record(art)
    assert art.io.dynamic_spatial and rec["opset"] == 17 and "spatial" not in rec
    assert rec["parity"]["second size"]["cosine"] > 0.9999
    with rt.open_artifact(art) as sess:  # and the device runs it at a third size
        out = sess.run({"input": np.zeros((1, 1, *(s * 2 for s in shape[2:])), np.float32)})
    assert next(iter(out.values())).shape == (1, 3, *(s * 2 for s in shape[2:]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["UNETR 3D", "SwinUNETR 2D"])
def test_fixed_roi_nets_export_at_the_roi_for_a_sliding_window(name: str, tmp_path: Path) -> None:
    pytest.importorskip("einops")
    torch.manual_seed(0)
    if name == "UNETR 3D":
        net, shape = nets.UNETR(1, 3, img_size=(32, 32, 32), feature_size=8, hidden_size=96,
                                mlp_dim=192, num_heads=4), (1, 1, 32, 32, 32)
    else:
        net, shape = nets.SwinUNETR(in_channels=1, out_channels=3, feature_size=12,
                                    spatial_dims=2), (1, 1, 64, 64)
    with pytest.raises(ExportError) as err:  # whole-volume inference would feed other sizes
        _export(net, shape, tmp_path / "a")
    assert err.value.code == "fixed-size-model"
    inf = rt.InferenceSpec(mode="sliding_window", roi_size=shape[2:])
    art = _export(net, shape, tmp_path / "b", inference=inf)
    assert not art.io.dynamic_spatial and "fixed at" in _record(art)["spatial"]
    assert _record(art)["parity"]["random"]["cosine"] > 0.9999
