"""Model intake (every form) and ONNX export with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgemed.errors import ExportError, InvalidInputError
from edgemed.model import load_model
from edgemed.passes.base import BuildContext
from edgemed.passes.export_onnx import ExportOnnx
from edgemed_runtime.artifact import Artifact
from edgemed_runtime.iospec import IOSpec

from tests.helpers.tiny_models import Divergent, NotExportable, TinyNet, make_net


def _export(module: torch.nn.Module, tmp_path: Path, calib: np.ndarray | None = None) -> Artifact:
    src = Artifact(path=tmp_path, format="torch", model_file="", io=IOSpec(input_shape=(1, 1, 16, 16)),
                   payload=module)
    return ExportOnnx()(src, tmp_path / "export", BuildContext(calibration=calib))


def test_module_object_and_hash_is_content_based() -> None:
    a, b = load_model(make_net()), load_model(make_net())
    assert a.kind == "torch" and a.sha256 == b.sha256
    other = make_net()
    with torch.no_grad():
        other.head.bias.add_(1.0)
    assert load_model(other).sha256 != a.sha256


def test_factory_with_state_dict_and_checkpoint(tmp_path: Path) -> None:
    net = make_net()
    with torch.no_grad():
        net.head.bias.fill_(0.25)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "ckpt.pt")
    for w in ("sd.pt", "ckpt.pt"):
        src = load_model("tests.helpers.tiny_models:make_net", weights=tmp_path / w)
        assert torch.allclose(src.module.head.bias, torch.full((2,), 0.25))


def test_torchscript_onnx_and_monai(tmp_path: Path) -> None:
    ts = tmp_path / "net.pt"
    torch.jit.trace(make_net(), torch.zeros(1, 1, 16, 16)).save(str(ts))
    assert load_model(ts).kind == "torch"
    art = _export(make_net(), tmp_path)
    src = load_model(art.model_path)
    assert src.kind == "onnx" and src.onnx_path == art.model_path
    m = load_model("monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2")
    assert type(m.module).__name__ == "DenseNet121"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("no/such/file.onnx", "not-found"),
        ("monai:NoSuchNet", "invalid-input"),
        ("monai:DenseNet121 spatial_dims=2 bogus_arg=1", "invalid-input"),
        ("no_such_module_xyz:make", "invalid-input"),
    ],
)
def test_bad_model_specs(spec: str, code: str) -> None:
    with pytest.raises(InvalidInputError) as ei:
        load_model(spec)
    assert ei.value.code == code and ei.value.found


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pt"
    junk.write_text("just text")
    with pytest.raises(InvalidInputError) as ei:
        load_model(junk)
    assert ei.value.code == "not-a-model"


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    torch.save(TinyNet(classes=3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(InvalidInputError, match="do not fit"):
        load_model("tests.helpers.tiny_models:make_net", weights=tmp_path / "w.pt")


def test_export_is_opset17_single_file_dynamic_batch_with_parity(tmp_path: Path) -> None:
    calib = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    art = _export(make_net(), tmp_path, calib)
    m = onnx.load(str(art.model_path))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert sorted(p.name for p in art.path.iterdir()) == ["model.onnx"]  # no external data
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    rec = art.provenance[-1]
    assert rec["pass"] == "export_onnx"
    for key in ("random", "calibration"):
        assert rec["parity"][key]["cosine"] > 0.9999
        assert rec["parity"][key]["max_abs_diff"] < 1e-4
    import onnxruntime as ort

    s = ort.InferenceSession(str(art.model_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = make_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(s.run(None, {"input": x})[0], ref, atol=1e-4)


def test_unexportable_model_raises_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as ei:
        _export(NotExportable(), tmp_path)
    assert "constant" in ei.value.found and not (tmp_path / "export" / "model.onnx").exists()


def test_divergent_model_raises_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="diverges") as ei:
        _export(Divergent().eval(), tmp_path)
    assert "max abs diff" in ei.value.found
    assert not (tmp_path / "export" / "model.onnx").exists()
