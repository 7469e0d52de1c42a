"""NNCF accuracy-controlled quantization with mean Dice as the metric (``quantize_openvino_ac``):
on a small 3D UNet and a few synthetic series the INT8 model's Dice (against the masks, or
against the FP32 labels without them) drops by no more than ``max_drop``; no validation series
is an error; the variant is a candidate for segmentation builds only."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import edgemed
import edgemed_runtime as rt
from edgemed_runtime.sdk import cpu_flags
from edgemed.data.synthetic_series import write_series_dataset
from edgemed.errors import CalibrationError
from edgemed.passes.base import BuildContext, get_pass_class
from edgemed.pipeline import BuildOptions
from edgemed.segmentation import SegGateConfig
from edgemed.segmentation.accuracy_control import AGREEMENT, GROUND_TRUTH, case_dice
from edgemed.targets import load_target

pytest.importorskip("nncf")
pytest.importorskip("openvino")
pytest.importorskip("monai")

SPEC = rt.VolumeSpec(axcodes="RAS", spacing=(2.0, 2.0, 2.0), intensity=(-200.0, 300.0, 0.0, 1.0))
ROI = 16
INF = rt.InferenceSpec(mode="sliding_window", roi_size=(ROI,) * 3, overlap=0.25, blend="gaussian",
                       sw_batch_size=4)
LABELS = ("background", "liver", "kidney")
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series_dataset(tmp_path_factory.mktemp("segac") / "data", n_series=4, seed=3,
                                shape=(16, 28, 28), masks=True)


@pytest.fixture(scope="module")
def unmasked(series: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same series without the mask column (agreement with FP32 only)."""
    root = tmp_path_factory.mktemp("segac-nomask") / "data"
    shutil.copytree(series, root)
    rows = list(csv.DictReader(open(root / "labels.csv", newline="")))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"])
        w.writerows([r["path"], r["label"], r["patient_id"]] for r in rows)
    return root


@pytest.fixture(scope="module")
def trained(series: Path) -> torch.nn.Module:
    from edgemed.segdemo import _training_arrays, train_unet

    xs, ys = _training_arrays(series)
    net, _ = train_unet(xs, ys, roi=ROI, steps=40, seed=0)
    return net


def _build(net: torch.nn.Module, data: Path, out: Path) -> rt.Artifact:
    """The openvino-cpu accuracy-control variant alone; the gate's margin wide (0.05) so that
    the test judges the pass's rule, not the gate's (the build gates it as it does any)."""
    return edgemed.build(net, torch.zeros(1, 1, ROI, ROI, ROI), calibration=data,
                         validation=data, preprocess=SPEC, inference=INF, task="segmentation",
                         labels=LABELS, target="openvino-cpu", quiet=True, out=out,
                         gate=SegGateConfig(non_inferiority_margin=0.05),
                         options=BuildOptions(select="ov-nncf-int8-ac"))


def _ac_record(art: rt.Artifact) -> dict:
    return next(r for r in art.provenance if r["pass"] == "quantize_openvino_ac")


@pytest.mark.parametrize("masks", [True, False], ids=["masks", "agreement"])
def test_dice_drop_within_max_drop(trained: torch.nn.Module, series: Path, unmasked: Path,
                                   masks: bool, tmp_path: Path) -> None:
    art = _build(trained, series if masks else unmasked, tmp_path / "out")
    rec = _ac_record(art)
    assert rec["metric"] == "mean Dice" and rec["validation_cases"] == 4
    assert rec["dice_against"] == (GROUND_TRUTH if masks else AGREEMENT)
    assert art.format == "openvino-ir"
    # every layer back in FP32 is the extreme of the rule: then nothing may have been lost
    assert rec["fake_quantize_nodes"] > 0 or rec["dice_drop"] == 0.0
    assert rec["max_drop"] == rec["config"]["max_drop"]
    assert rec["dice_drop"] <= rec["max_drop"] and rec["max_drop_met"]  # NNCF reverted enough
    assert 0.0 <= rec["dice_int8"] <= 1.0
    if not masks:
        assert rec["dice_fp32"] == 1.0  # the FP32 model agrees with its own labels
    sel = next(r for r in art.provenance if r["pass"] == "select_variant")
    gate = sel["candidates"]["ov-nncf-int8-ac"]
    assert gate["task"] == "segmentation" and gate["labelled"] is masks
    excluded = sel["isa"]["excluded"]  # the build's candidate rule, on this host's flags
    assert "ov-nncf-int8-ac" not in excluded
    host_vnni = bool(set(cpu_flags()) & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert ("ov-nncf-int8-ac-of-sp" in excluded) is (host_vnni or "avx2" not in cpu_flags())


def test_not_a_candidate_for_classification(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).eval()
    x = np.random.default_rng(0).normal(size=(8, 1, 16, 16)).astype(np.float32)
    art = edgemed.build(net, torch.zeros(1, 1, 16, 16), calibration=x, target="openvino-cpu",
                        quiet=True, out=tmp_path / "cls", options=BuildOptions(select="default"))
    sel = next(r for r in art.provenance if r["pass"] == "select_variant")
    for name in ("ov-nncf-int8-ac", "ov-nncf-int8-ac-of-sp"):
        assert "segmentation" in sel["isa"]["excluded"][name]


def test_no_validation_series_is_an_error(tmp_path: Path) -> None:
    ac = get_pass_class("quantize_openvino_ac")({"max_drop": 0.02})
    ctx = BuildContext(calibration=np.zeros((2, 1, ROI, ROI, ROI), np.float32))
    art = rt.Artifact(path=tmp_path, format="onnx", model_file="model.onnx",
                      io=rt.IOSpec(input_shape=(1, 1, ROI, ROI, ROI)))
    with pytest.raises(CalibrationError) as err:
        ac.run(art, tmp_path / "w", ctx)
    assert err.value.code == "empty" and "validation" in err.value.message


def test_case_dice_follows_the_gates_empty_rules() -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    assert case_dice(a, b, 2) == 1.0  # both labels absent in both: 1 each
    a[0, 0, :2], b[0, 0, 1:3] = 1, 1
    assert case_dice(a, b, 2) == pytest.approx((0.5 + 1.0) / 2)
    b[3, 3, 3] = 2  # kidney only in the target: 0
    assert case_dice(a, b, 2) == pytest.approx(0.25)


@pytest.mark.parametrize("target", ["cpu-x86", "openvino-cpu"])
def test_variant_is_a_candidate_for_segmentation_only(target: str) -> None:
    prof = load_target(target)
    for name in ("ov-nncf-int8-ac", "ov-nncf-int8-ac-of-sp"):
        v = prof.variant(name)
        assert v.tasks == ("segmentation",)
        assert "quantize_openvino_ac" in [p["pass"] for p in v.passes]
        for flags in (VNNI, AVX2):
            assert not v.eligible(flags)[0]  # classification (the default task)
            assert not v.eligible(flags, task="multilabel")[0]
    plain, of_sp = prof.variant("ov-nncf-int8-ac"), prof.variant("ov-nncf-int8-ac-of-sp")
    assert plain.eligible(VNNI, task="segmentation") == (True, "")
    assert of_sp.eligible(AVX2, task="segmentation") == (True, "")
    assert not of_sp.eligible(VNNI, task="segmentation")[0]  # VNNI: no overflow fix needed
