"""build(): variants, timing, selection, provenance, the accuracy gate, atomic output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgemed
from edgemed.dicom import LabelledArrays
from edgemed.errors import GateError, InvalidInputError, ProfileError
from edgemed.evaluate import GateConfig, run_gate
from edgemed.targets import load_target

from tests.helpers.selection_rules import assert_selection_rule
from tests.helpers.tiny_models import Fragile, make_net


def test_artifact_on_disk_with_provenance(tiny_artifact: edgemed.Artifact) -> None:
    art = tiny_artifact
    names = sorted(p.name for p in art.path.iterdir())
    assert names == ["artifact.json", "model.onnx", "reference", "report.json"]
    assert art.format == "onnx-qdq" and art.backend == "onnxruntime"
    passes = [r["pass"] for r in art.provenance]
    assert passes == ["source", "calibration_set", "export_onnx", "quantize_onnxruntime",
                      "select_variant"]
    calib = art.provenance[1]
    assert calib["count"] == 64 and calib["seed"] == 0 and len(calib["sha256"]) == 64
    assert art.provenance[0]["sha256"] and art.target["name"] == "cpu-x86"
    assert art.target["sha256"] == load_target("cpu-x86").sha256
    assert art.provenance[3]["tools"]["onnxruntime"]


def test_candidates_timed_and_choice_recorded(tiny_auto: edgemed.Artifact) -> None:
    sel = tiny_auto.provenance[-1]
    assert sel["host_matches_target"] is True and sel["latency"] == "measured"
    assert sel["isa"]["device_cpu_flags"] == "build host"
    assert_selection_rule(sel, load_target("cpu-x86"))
    assert sel["chosen"] == tiny_auto.target["variant"]
    assert "fastest" in sel["why"] or sel["status"] == "fallback-fp32"
    gate = tiny_auto.metrics["gate"]
    assert gate["passed"] and gate["labelled"] and gate["n"] == 64
    assert gate["agreement"]["top1_agreement"] >= 0.95
    assert set(gate["non_inferiority"]) == {"accuracy", "auc"}
    assert "host's kernels" in gate["evaluator"]


def test_runtime_session_matches_reference(tiny_artifact: edgemed.Artifact, synthetic_dir: Path) -> None:
    files = sorted(synthetic_dir.rglob("*.dcm"))[:3]
    with edgemed.runtime.open(tiny_artifact) as s8, \
            edgemed.runtime.open(tiny_artifact.path / "reference") as s32:
        assert s8.inputs[0].shape == (-1, 1, 16, 16) and s8.labels == ("no_lesion", "lesion")
        p8 = s8.predict([str(f) for f in files])
        p32 = s32.predict([str(f) for f in files])
        assert p8.shape == (3, 2)
        np.testing.assert_allclose(p8.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(p8, p32, atol=0.05)
        one = s8.predict(str(files[0]))
        np.testing.assert_allclose(one[0], p8[0], atol=1e-6)
        batch = s8.prepare([str(f) for f in files])
        np.testing.assert_allclose(s8.predict(batch), p8, atol=1e-6)
        np.testing.assert_allclose(s8.predict(batch[0]), p8[:1], atol=1e-6)
        with pytest.raises(InvalidInputError, match="wrong shape"):
            s8.run({"input": np.zeros((1, 1, 8, 8), np.float32)})


def test_host_mismatch_uses_declared_default(tmp_path: Path) -> None:
    from edgemed.targets import BUILTIN_DIR

    prof = (BUILTIN_DIR / "cpu-x86.toml").read_text().replace(
        'arch = ["x86_64", "AMD64"]', 'arch = ["riscv64"]').replace(
        'name = "cpu-x86"', 'name = "cpu-riscv-test"')
    (tmp_path / "cpu-riscv-test.toml").write_text(prof)
    x = np.random.default_rng(0).standard_normal((16, 1, 16, 16)).astype(np.float32)
    art = edgemed.build(make_net(), torch.zeros(1, 1, 16, 16), calibration=x,
                        target=tmp_path / "cpu-riscv-test.toml", out=tmp_path / "o")
    sel = art.provenance[-1]
    assert sel["host_matches_target"] is False and sel["latency"] == "unmeasured"
    assert sel["chosen"] == "ort-int8-rr" and "declared default" in sel["why"]
    assert list(sel["candidates"]) == ["ort-int8-rr"]
    assert sel["gate_data"].startswith("calibration inputs")
    # the device CPU is unknown: variants that need VNNI are left out, and the gate simulates
    # Q/DQ in float instead of trusting this host's integer kernels
    assert sel["isa"]["device_cpu_flags"] == "unknown"
    assert "ort-int8-u8s8" in sel["isa"]["excluded"]
    assert "host-independent" in sel["gated_with"]["ort-int8-rr"]["evaluator"]


def _fragile_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((64, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        y = Fragile().eval()(torch.from_numpy(x)).argmax(1).numpy()
    return x, y


def _strict_x86() -> Any:
    return load_target("cpu-x86").model_copy(update={"require_compressed": True})


def test_gate_failure_writes_report_and_no_artifact(tmp_path: Path) -> None:
    x, y = _fragile_data()
    assert 0.2 < y.mean() < 0.8
    out = tmp_path / "o"
    with pytest.raises(GateError) as ei:
        edgemed.build(Fragile().eval(), torch.zeros(1, 1, 16, 16), calibration=x,
                      validation=LabelledArrays(x, y, ("a", "b"), ()), out=out,
                      target=_strict_x86())
    assert ei.value.exit_code == 1 and "not non-inferior" in ei.value.found
    assert "require_compressed" in ei.value.message
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is False
    cand = report["selection"]["candidates"]["ort-int8-rr"]
    ref_acc, cand_acc = cand["reference"]["accuracy"], cand["candidate"]["accuracy"]
    assert ref_acc >= 0.9, "the FP32 reference itself is right on most cases (any CPU)"
    assert cand["non_inferiority"]["accuracy"]["ci"][0] < -0.05 and cand_acc < ref_acc
    assert report["selection"]["candidates"]["ort-fp32"]["passed"]
    assert not list(tmp_path.glob(".o.*")), "no staging folder left behind"


def test_no_compressed_candidate_ships_fp32_fallback(tmp_path: Path) -> None:
    x, y = _fragile_data()
    art = edgemed.build(Fragile().eval(), torch.zeros(1, 1, 16, 16), calibration=x,
                        validation=LabelledArrays(x, y, ("a", "b"), ()), out=tmp_path / "o")
    sel = art.provenance[-1]
    assert sel["chosen"] == "ort-fp32" and sel["status"] == "fallback-fp32"
    assert sel["fallback_reason"] == "no compressed candidate passed the gate"
    assert "FP32 baseline" in sel["why"] and art.format == "onnx"
    assert not any(g["passed"] for n, g in sel["candidates"].items() if n != "ort-fp32")


def test_gate_failure_keeps_previous_artifact(tmp_path: Path) -> None:
    x, y = _fragile_data()
    out = tmp_path / "o"
    edgemed.build(make_net(), torch.zeros(1, 1, 16, 16), calibration=x, out=out)
    with pytest.raises(GateError):
        edgemed.build(Fragile().eval(), torch.zeros(1, 1, 16, 16), calibration=x,
                      validation=LabelledArrays(x, y, ("a", "b"), ()), out=out,
                      target=_strict_x86())
    assert not (out / "artifact.json").exists(), "a failed gate must not leave a usable artifact"


def test_agreement_only_gate_without_labels() -> None:
    ref = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.5], [0.2, 0.1]])
    same = run_gate(ref, ref + 0.01, None, GateConfig())
    assert same.passed and not same.labelled and same.to_dict()["mode"].startswith("agreement")
    flipped = run_gate(ref, ref[:, ::-1], None, GateConfig())
    assert not flipped.passed and "agreement" in flipped.reasons[0]


def test_labelled_gate_limits() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    ref = np.eye(2)[y] * 3.0
    cand = ref.copy()
    cand[0] = [0.0, 3.0]  # one of ten flips: accuracy -0.10
    assert not run_gate(ref, cand, y, GateConfig()).passed
    assert run_gate(ref, cand, y, GateConfig(decision="absolute", max_accuracy_drop=0.2,
                                             max_auc_drop=0.2)).passed


def test_one_class_validation_set(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    with pytest.raises(InvalidInputError) as ei:
        edgemed.build(make_net(), torch.zeros(1, 1, 16, 16), calibration=x,
                      validation=LabelledArrays(x, np.zeros(8, np.int64), ("a", "b"), ()),
                      out=tmp_path / "o")
    assert ei.value.code == "one-class"
    assert not (tmp_path / "o").exists()


def test_input_shape_mismatch(tmp_path: Path) -> None:
    x = np.zeros((4, 3, 16, 16), np.float32)
    with pytest.raises(InvalidInputError) as ei:
        edgemed.build(make_net(), torch.zeros(1, 3, 16, 16), calibration=x, out=tmp_path / "o")
    assert ei.value.code == "shape-mismatch" and "1x3x16x16" in ei.value.found
    assert not (tmp_path / "o").exists()


def test_profile_refusals(tmp_path: Path) -> None:
    from edgemed.targets import BUILTIN_DIR

    base = (BUILTIN_DIR / "cpu-x86.toml").read_text()
    cases = {
        "unknown-pass": base.replace('pass = "quantize_onnxruntime"', 'pass = "quantize_magic"'),
        "format-mismatch": base.replace(
            '{ pass = "export_onnx", opset = 17 },\n  { pass = "quantize_onnxruntime", activation_type = "uint8"',
            '{ pass = "export_onnx", opset = 17 },\n  { pass = "quantize_onnxruntime" },\n'
            '  { pass = "quantize_onnxruntime", activation_type = "uint8"'),
        "Extra inputs are not permitted": base.replace('kind = "cpu"', 'kind = "cpu"\nturbo = true'),
    }
    for what, text in cases.items():
        f = tmp_path / f"{what.replace(' ', '_')}.toml"
        f.write_text(text)
        with pytest.raises(ProfileError) as ei:
            load_target(f)
        assert what in (ei.value.code + str(ei.value)), what
