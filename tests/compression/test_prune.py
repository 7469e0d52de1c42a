"""Unstructured and structured pruning passes on real (tiny and MONAI) models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemed.errors import InvalidInputError, ProfileError
from edgemed.passes.base import BuildContext, get_pass_class
from edgemed.passes.prune_unstructured import schedule_sparsities
from edgemed.passes.torch_common import weight_sparsity


def _run(name, cfg, art, ctx, tmp_path):
    return get_pass_class(name)(cfg)(art, tmp_path, ctx)


def test_schedules_end_at_target():
    assert schedule_sparsities(0.6, 1, "cubic") == [0.6]
    lin = schedule_sparsities(0.6, 3, "linear")
    cub = schedule_sparsities(0.6, 3, "cubic")
    assert lin == pytest.approx([0.2, 0.4, 0.6])
    assert cub[-1] == pytest.approx(0.6) and cub[0] > lin[0]  # cubic prunes faster early


@pytest.mark.parametrize("scope", ["global", "local"])
def test_unstructured_reaches_sparsity_and_keeps_first_and_last(torch_artifact, ctx, tmp_path,
                                                                scope):
    out = _run("prune_unstructured", {"sparsity": 0.5, "scope": scope, "schedule": "cubic",
                                      "steps": 3}, torch_artifact, ctx, tmp_path)
    sp = weight_sparsity(out.payload)
    rec = out.provenance[-1]
    kept = rec["kept_layers"]
    assert kept == ["0.0", "6"]  # first conv and the classifier of small_cnn
    assert sp["0.0"] == 0 and sp["6"] == 0
    pruned = {k: v for k, v in sp.items() if k not in kept and k != "total"}
    # among the pruned layers, half the weights are zero (global: overall; local: each layer)
    sizes = {n: m.weight.numel() for n, m in out.payload.named_modules() if n in pruned}
    overall = sum(pruned[n] * sizes[n] for n in pruned) / sum(sizes.values())
    assert overall == pytest.approx(0.5, abs=0.01)
    if scope == "local":
        assert all(v == pytest.approx(0.5, abs=0.01) for v in pruned.values())
    else:
        assert max(pruned.values()) - min(pruned.values()) > 0.05  # one threshold, uneven layers
    # the input model is untouched (the build memoises shared prefixes)
    assert weight_sparsity(torch_artifact.payload)["total"] < 0.01
    assert rec["schedule"][-1] == pytest.approx(0.5)


def test_unstructured_with_recovery_between_steps(torch_artifact, ctx, tmp_path, task32):
    from tests.helpers.compress_helpers import accuracy

    out = _run("prune_unstructured", {"sparsity": 0.7, "steps": 2, "schedule": "linear",
                                      "finetune_epochs": 1, "finetune_lr": 1e-3},
               torch_artifact, ctx, tmp_path)
    assert len(out.provenance[-1]["recovery_val_accuracy"]) == 2
    assert weight_sparsity(out.payload)["total"] > 0.6  # sparsity survived fine-tuning
    assert accuracy(out.payload, task32[2]) > 0.6
    assert ctx.extras["teacher"] is not None  # the FP32 model was kept for distillation


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
def test_structured_removes_channels(torch_artifact, ctx, tmp_path, importance):
    out = _run("prune_structured", {"ratio": 0.5, "importance": importance}, torch_artifact,
               ctx, tmp_path)
    rec = out.provenance[-1]
    assert rec["macs_after"] < 0.45 * rec["macs_before"]
    convs = [m for m in out.payload.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 8  # first conv kept whole
    assert convs[-1].out_channels == 32  # 64 -> 32
    with torch.no_grad():
        assert out.payload(torch.zeros(3, 1, 32, 32)).shape == (3, 2)


def test_structured_keep_globs_and_iterative_steps(torch_artifact, ctx, tmp_path):
    out = _run("prune_structured", {"ratio": 0.4, "steps": 2, "keep": ["1.*"],
                                    "finetune_epochs": 1}, torch_artifact, ctx, tmp_path)
    block1 = [m for n, m in out.payload.named_modules()
              if n.startswith("1.") and isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in block1] == [16, 16]
    assert len(out.provenance[-1]["steps"]) == 2


def test_structured_then_export_and_int8(torch_artifact, ctx, tmp_path):
    art = _run("prune_structured", {"ratio": 0.5}, torch_artifact, ctx, tmp_path / "p")
    onnx_art = _run("export_onnx", {}, art, ctx, tmp_path / "e")
    q = _run("quantize_onnxruntime", {}, onnx_art, ctx, tmp_path / "q")
    import onnx

    m = onnx.load(str(onnx_art.model_path))
    shapes = [tuple(i.dims) for i in m.graph.initializer if len(i.dims) == 4]
    assert max(s[0] for s in shapes) == 32
    assert q.format == "onnx-qdq" and q.model_path.stat().st_size < onnx_art.model_path.stat().st_size


@pytest.mark.parametrize("arch", ["resnet18",
                                  pytest.param("densenet121", marks=pytest.mark.slow)])
def test_structured_on_monai_networks(tmp_path, arch):
    from monai.networks.nets import DenseNet121, resnet18

    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    torch.manual_seed(0)
    net = (resnet18(spatial_dims=2, n_input_channels=1, num_classes=2) if arch == "resnet18"
           else DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)).eval()
    art = Artifact(path=".", format="torch", model_file="", io=IOSpec(input_shape=(1, 1, 32, 32)),
                   payload=net)
    ctx = BuildContext(calibration=np.random.default_rng(0).random((4, 1, 32, 32), np.float32))
    out = _run("prune_structured", {"ratio": 0.3, "importance": "bn_scale"}, art, ctx, tmp_path)
    rec = out.provenance[-1]
    assert rec["params_after"] < 0.7 * rec["params_before"]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert out.payload(x).shape == (2, 2)
    onnx_art = _run("export_onnx", {}, out, ctx, tmp_path / "e")  # parity-checked export
    assert onnx_art.format == "onnx"


def test_bad_settings_and_inputs(torch_artifact, ctx, tmp_path):
    with pytest.raises(ProfileError):
        get_pass_class("prune_structured")({"ratio": 1.5})
    with pytest.raises(ProfileError):
        get_pass_class("prune_unstructured")({"sparsity": 0.5, "bogus": 1})
    onnx_like = torch_artifact.evolve(format="onnx", model_file="m.onnx", payload=None)
    with pytest.raises(InvalidInputError) as e:
        _run("prune_structured", {}, onnx_like, ctx, tmp_path)
    assert e.value.code == "needs-torch"
    no_data = BuildContext()
    with pytest.raises(InvalidInputError) as e:
        _run("prune_unstructured", {"finetune_epochs": 1}, torch_artifact, no_data, tmp_path)
    assert e.value.code == "needs-train-data"
