"""Compression passes inside a target profile: build() gates them against the original model."""

from __future__ import annotations

import json

import numpy as np
import pytest

PROFILE = """
name = "cpu-compressed-test"
kind = "cpu"
default_variant = "pruned-int8"
[runtime]
threads = 2
[gate]      # pruning changes predictions by design: absolute limits on the point estimates
decision = "absolute"
max_accuracy_drop = 0.05
max_auc_drop = 0.05
[[variants]]
name = "pruned-int8"
backend = "onnxruntime"
passes = [
  { pass = "prune_structured", ratio = 0.5 },
  { pass = "finetune", epochs = 1, full_lr = 1e-3 },
  { pass = "export_onnx" },
  { pass = "quantize_onnxruntime", activation_type = "uint8", weight_type = "int8", reduce_range = true },
]
[[variants]]
name = "qat-int8"     # 7-bit weights: the same numerics on x86 with or without VNNI
backend = "onnxruntime"
passes = [{ pass = "qat", epochs = 1, reduce_range = true }]
"""


def test_build_with_pruning_variant_gates_against_original(task32, tmp_path):
    import onnx
    import torch

    import edgemed
    from edgemed.dicom.folder import LabelledArrays
    from edgemed.pipeline import BuildOptions
    from edgemed.targets import load_target

    model, train, val, calib = task32
    (tmp_path / "t.toml").write_text(PROFILE)
    profile = load_target(tmp_path / "t.toml")
    assert [v.name for v in profile.variants] == ["pruned-int8", "qat-int8", "fp32-baseline"]
    val_set = LabelledArrays(x=val[0], y=val[1], class_names=("no_lesion", "lesion"), paths=())
    art = edgemed.build(model, torch.zeros(1, 1, 32, 32), calibration=calib, validation=val_set,
                        target=profile, out=tmp_path / "out", options=BuildOptions(
                            select="pruned-int8", extras={"train": train, "val": val}))
    assert art.format == "onnx-qdq"
    ref = onnx.load(str(tmp_path / "out" / "reference" / "model.onnx"))
    ref_out_channels = max(i.dims[0] for i in ref.graph.initializer if len(i.dims) == 4)
    assert ref_out_channels == 64  # the gate's reference is the unpruned FP32 model
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    gate = report["metrics"]["gate"]
    assert gate["passed"] and gate["reference"]["accuracy"] == pytest.approx(
        float((np.asarray(_ref_pred(model, val[0])) == val[1]).mean()), abs=0.02)
    passes = [r["pass"] for r in art.provenance]
    assert passes[:5] == ["source", "calibration_set", "prune_structured", "finetune",
                          "export_onnx"]


def _ref_pred(model, x):
    from edgemed._torch import predict_logits

    return predict_logits(model, x).argmax(1)


def test_build_qat_variant_is_gated(task32, tmp_path):
    import torch

    import edgemed
    from edgemed.dicom.folder import LabelledArrays
    from edgemed.pipeline import BuildOptions
    from edgemed.targets import load_target

    model, train, val, calib = task32
    (tmp_path / "t.toml").write_text(PROFILE)
    val_set = LabelledArrays(x=val[0], y=val[1], class_names=("no_lesion", "lesion"), paths=())
    art = edgemed.build(model, torch.zeros(1, 1, 32, 32), calibration=calib, validation=val_set,
                        target=load_target(tmp_path / "t.toml"), out=tmp_path / "out",
                        options=BuildOptions(select="qat-int8",
                                             extras={"train": train, "val": val}))
    assert art.format == "onnx-qdq"
    gate = art.metrics["gate"]
    assert gate is not None and gate["labelled"] and gate["passed"]
    assert (tmp_path / "out" / "reference" / "model.onnx").is_file()
