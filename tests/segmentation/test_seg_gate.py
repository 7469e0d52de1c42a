"""The segmentation gate (edgemed.segmentation.gate): identical candidate passes with CI [0, 0],
a candidate that erodes one label by 2 voxels fails non-inferiority at margin 0.01, the paired
bootstrap is the documented one, determinism, empty ground-truth masks (defined, no warning, no
NaN in to_dict), the agreement-only mode, and the refusals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage

from edgemed.errors import InvalidInputError
from edgemed.segmentation import (
    SegGateConfig,
    SegGateResult,
    case_metrics,
    run_segmentation_gate,
    seg_gate_summary,
)

LABELS = ("organ", "lesion")
SHAPE = (12, 20, 20)
N = 5
FAST = SegGateConfig(bootstrap=200)


def _cases(n: int = N, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple]]:
    """(truth, reference, spacings): an organ with a lesion inside; the reference is the truth
    with a random part of the organ's outer shell added (Dice < 1, varying across cases)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth, ref, spacings = [], [], []
    for _ in range(n):
        c = rng.uniform([5, 8, 8], [7, 12, 12])
        t = np.zeros(SHAPE, np.int64)
        t[((z - c[0]) / 5) ** 2 + ((y - c[1]) / 7) ** 2 + ((x - c[2]) / 8) ** 2 < 1] = 1
        t[((z - c[0]) / 2.5) ** 2 + ((y - c[1]) / 3) ** 2 + ((x - c[2]) / 3) ** 2 < 1] = 2
        r = t.copy()
        shell = ndimage.binary_dilation(t > 0) & (t == 0)
        r[shell & (rng.random(SHAPE) < rng.uniform(0.1, 0.5))] = 1
        truth.append(t)
        ref.append(r)
        spacings.append((2.0, float(rng.uniform(0.7, 1.0)), float(rng.uniform(0.7, 1.0))))
    return truth, ref, spacings


def _erode(vol: np.ndarray, label: int, voxels: int) -> np.ndarray:
    out = vol.copy()
    m = vol == label
    out[m & ~ndimage.binary_erosion(m, iterations=voxels)] = 0
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], list[np.ndarray], list[tuple]]:
    return _cases()


@pytest.fixture(scope="module")
def identical(data) -> SegGateResult:
    truth, ref, sp = data
    return run_segmentation_gate(ref, [r.copy() for r in ref], truth, labels=LABELS, spacings=sp,
                                 cfg=FAST)


def test_identical_candidate_passes_with_a_zero_ci(identical: SegGateResult) -> None:
    r = identical
    assert r.passed and r.labelled and not r.reasons
    assert r.non_inferiority is not None
    ni = r.non_inferiority["dice"]
    assert ni["difference"] == 0.0 and tuple(ni["ci"]) == (0.0, 0.0) and ni["non_inferior"]
    for m in ("dice", "hd95_mm", "surface_dice"):
        assert r.differences is not None and tuple(r.differences[m]["ci"]) == (0.0, 0.0)
    assert r.reference == r.candidate
    assert r.reference is not None and 0.5 < r.reference["dice"] < 1.0  # a realistic reference
    assert r.agreement["dice"] == 1.0 and tuple(r.agreement["dice_ci"]) == (1.0, 1.0)
    assert r.worst_drop["drop"] == 0.0
    assert len(r.per_case) == N and set(r.per_case[0]) == {"case", "reference", "candidate",
                                                           "agreement"}
    assert set(r.per_label) == set(LABELS)
    assert r.metric_settings["implementation"] == "monai.metrics"


def test_eroding_one_label_by_two_voxels_fails_non_inferiority(data) -> None:
    truth, ref, sp = data
    cand = [_erode(r, 2, 2) for r in ref]
    r = run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp,
                              cfg=SegGateConfig(bootstrap=200, non_inferiority_margin=0.01))
    assert not r.passed
    assert r.non_inferiority is not None and not r.non_inferiority["dice"]["non_inferior"]
    assert r.non_inferiority["dice"]["ci"][0] < -0.01
    assert any("not non-inferior on mean dice" in m for m in r.reasons)
    assert r.worst_drop["label"] == "lesion" and r.worst_drop["drop"] > 0.1
    assert r.differences is not None and r.differences["hd95_mm"]["difference"] > 0  # worse
    assert r.per_label["lesion"]["candidate"]["dice"] < r.per_label["lesion"]["reference"]["dice"]
    assert r.per_label["organ"]["candidate"] == r.per_label["organ"]["reference"]


def test_the_ci_is_the_paired_case_level_bootstrap(data) -> None:
    """Recomputed by hand: one set of case resamples, mean per-case Dice difference, percentiles."""
    truth, ref, sp = data
    rng = np.random.default_rng(5)
    cand = [np.where((r > 0) & (rng.random(SHAPE) < 0.05), 0, r) for r in ref]
    cfg = SegGateConfig(bootstrap=300, bootstrap_seed=7, confidence=0.9)
    r = run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp, cfg=cfg)
    i = 3
    assert r.per_case[i]["candidate"] == case_metrics(cand[i], truth[i], labels=LABELS,
                                                      spacing=sp[i])
    d = np.array([np.mean([c["candidate"][k]["dice"] - c["reference"][k]["dice"] for k in LABELS])
                  for c in r.per_case])
    idx = np.random.default_rng(7).integers(0, N, size=(300, N))
    boot = d[idx].mean(1)
    assert r.differences is not None
    assert r.differences["dice"]["difference"] == pytest.approx(d.mean(), abs=1e-12)
    assert r.differences["dice"]["ci"] == pytest.approx(
        (np.percentile(boot, 5), np.percentile(boot, 95)), abs=1e-12)
    assert r.differences["dice"]["ci"][0] < r.differences["dice"]["ci"][1] < 0


def test_same_seed_same_ci_other_seed_other_ci(data) -> None:
    truth, ref, sp = data
    truth, ref, sp = truth[:4], ref[:4], sp[:4]
    cand = [_erode(r, 1, 1) for r in ref]
    runs = [run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp,
                                  cfg=SegGateConfig(bootstrap=200, bootstrap_seed=s))
            for s in (3, 3, 4)]
    assert runs[0].to_dict() == runs[1].to_dict()
    assert runs[0].differences is not None and runs[2].differences is not None
    assert runs[0].differences["dice"]["ci"] != runs[2].differences["dice"]["ci"]


def test_empty_ground_truth_masks_are_defined(data) -> None:
    """Case 0 has no lesion in the truth nor in either model; in case 1 the truth has none but
    the candidate predicts one: both-empty and one-empty rules, counted, warned, no NaN."""
    truth, ref, sp = (list(x) for x in data)
    for i in (0, 1):
        truth[i] = np.where(truth[i] == 2, 1, truth[i])
        ref[i] = np.where(ref[i] == 2, 1, ref[i])
    cand = [r.copy() for r in ref]
    cand[1][2, 2, 2] = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp, cfg=FAST)
        d = r.to_dict()
    assert not caught, [str(w.message) for w in caught]
    text = json.dumps(d, allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert r.empty_masks["reference"]["lesion"] == {"both-empty": 2, "one-empty": 0}
    assert r.empty_masks["candidate"]["lesion"] == {"both-empty": 1, "one-empty": 1}
    assert r.empty_masks["agreement"]["lesion"] == {"both-empty": 1, "one-empty": 1}
    c1 = r.per_case[1]["candidate"]["lesion"]
    assert c1["empty"] == "one-empty" and c1["dice"] == 0.0 and c1["hd95_mm"] > 30
    assert r.per_case[0]["reference"]["lesion"]["dice"] == 1.0
    assert any("label 'lesion', candidate vs ground truth" in w for w in r.warnings)
    assert r.worst_drop["case"] == 1 and r.worst_drop["label"] == "lesion"
    assert not r.passed  # losing a whole label on one case of five costs more than 0.01


def test_without_ground_truth_the_gate_is_agreement_with_fp32(data) -> None:
    _, ref, sp = data
    same = run_segmentation_gate(ref, [r.copy() for r in ref], None, labels=LABELS, spacings=sp,
                                 cfg=FAST)
    assert same.passed and not same.labelled
    d = same.to_dict()
    assert d["mode"] == "agreement with FP32 (no ground truth)"
    assert d["reference"] is None and d["non_inferiority"] is None
    assert "no ground truth" in d["absent"]["reference"]
    assert "agreement with FP32 (no ground truth)" in same.summary()
    json.dumps(d, allow_nan=False)
    eroded = run_segmentation_gate(ref, [_erode(r, 2, 2) for r in ref], None, labels=LABELS,
                                   spacings=sp, cfg=FAST)
    assert not eroded.passed and eroded.agreement["dice_ci"][0] < 0.95
    assert "agreement with FP32" in eroded.reasons[0]
    assert eroded.worst_drop["label"] == "lesion" and eroded.worst_drop["agreement_dice"] < 0.8


def test_absolute_decision_and_describe(data) -> None:
    truth, ref, sp = data
    cand = [_erode(r, 2, 2) for r in ref]
    cfg = SegGateConfig(decision="absolute", bootstrap=200)
    r = run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp, cfg=cfg)
    assert not r.passed and r.non_inferiority is None
    assert "absolute" in r.absent["non_inferiority"]
    assert any(m.startswith("mean Dice dropped") for m in r.reasons)
    assert "mean Dice drop <= 0.01" in cfg.describe()
    assert "-0.01" in SegGateConfig().describe()
    with pytest.raises(ValidationError):
        SegGateConfig(margin=0.01)  # type: ignore[call-arg]  # unknown keys are rejected


def test_summary_is_one_line(identical: SegGateResult) -> None:
    s = identical.summary()
    assert "\n" not in s and s.startswith(f"n={N} ") and "Dice +0.000 [+0.000,+0.000]" in s
    assert s.endswith("pass")
    assert seg_gate_summary(None) == "–"
    assert seg_gate_summary(json.loads(json.dumps(identical.to_dict()))) == s


def test_few_cases_warn(data) -> None:
    truth, ref, sp = data
    r = run_segmentation_gate(ref[:3], ref[:3], truth[:3], labels=LABELS, spacings=sp[:3],
                              cfg=FAST)
    assert r.passed and any(w.startswith("only 3 case(s)") for w in r.warnings)


def test_bad_input_is_refused(data) -> None:
    truth, ref, sp = data
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate([], [], None, labels=LABELS, spacings=[])
    assert e.value.code == "empty"
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, ref[:-1], truth, labels=LABELS, spacings=sp)
    assert e.value.code == "shape-mismatch" and "candidate 4" in (e.value.found or "")
    cand = list(ref)
    cand[2] = ref[2][:, :, :-1]
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp)
    assert e.value.code == "mask-grid" and e.value.message.startswith("case 2:")
    cand = list(ref)
    cand[1] = np.where(ref[1] == 2, 5, ref[1])
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, cand, truth, labels=LABELS, spacings=sp)
    assert e.value.code == "bad-labels" and e.value.message.startswith("case 1:")
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, ref, truth, labels=LABELS, spacings=[(1.0, 1.0)] * N)
    assert e.value.code == "bad-spacing" and e.value.message.startswith("case 0:")
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, ref, truth, labels=None, spacings=sp)  # type: ignore[arg-type]
    assert e.value.code == "bad-labels"
    with pytest.raises(InvalidInputError) as e:
        run_segmentation_gate(ref, ref, truth, labels=LABELS, spacings=5)  # type: ignore[arg-type]
    assert e.value.code == "shape-mismatch"
