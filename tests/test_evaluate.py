"""Clinical metrics, CIs, ECE, sensitivity at fixed specificity, non-inferiority, and the gate."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.errors import InvalidInputError
from edgemed.evaluate import (GateConfig, agreement, bootstrap_cis, check_labels,
                              classification_metrics, clinical_report,
                              expected_calibration_error, non_inferiority, run_gate,
                              sensitivity_at_specificity)


def _probs(p1):
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1 - p1, p1], 1)


def test_ece_known_values():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    perfect = _probs([1, 1, 1, 1, 0, 0, 0, 0])
    assert expected_calibration_error(perfect, y) == pytest.approx(0.0)
    # always 90% confident, right half the time: ECE = |0.9 - 0.5|
    over = _probs([0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1])
    assert expected_calibration_error(over, y) == pytest.approx(0.4)


def test_sensitivity_at_fixed_specificity():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8])
    pos = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    r = sensitivity_at_specificity(scores, pos, 1.0)
    assert r["specificity"] == 1.0 and r["sensitivity"] == pytest.approx(0.75)
    r = sensitivity_at_specificity(scores, pos, 0.75)
    assert r["sensitivity"] == pytest.approx(1.0) and r["specificity"] >= 0.75


def test_clinical_report_binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)
    rep = clinical_report(_probs(p1), y, ("no_lesion", "lesion"), n_bootstrap=200)
    assert set(rep["per_class"]) == {"no_lesion", "lesion"}
    cm = np.array(rep["confusion_matrix"]["matrix"])
    assert cm.sum() == 200 and cm.trace() == round(rep["overall"]["accuracy"] * 200)
    lo, hi = rep["ci"]["accuracy"]
    assert lo <= rep["overall"]["accuracy"] <= hi and hi - lo < 0.2
    assert rep["per_class"]["lesion"]["recall"] == pytest.approx(rep["overall"]["recall"])
    assert 0 <= rep["ece"] <= 1
    assert rep["sensitivity_at_specificity"]["specificity"] >= 0.9


def test_clinical_report_multiclass():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 40)
    logits = np.eye(3)[y] * 2 + rng.normal(0, 1, (120, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rep = clinical_report(p, y, n_bootstrap=100)
    assert len(rep["per_class"]) == 3 and "macro_sensitivity" in rep["sensitivity_at_specificity"]
    assert rep["overall"]["auc"] > 0.8


def test_non_inferiority_decisions():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    good = _probs(np.where(y == 1, 0.8, 0.2))
    same = non_inferiority(good, good.copy(), y, margin=0.05, n_bootstrap=300)
    assert same["non_inferior"] and same["difference"] == 0
    flipped = np.where(rng.random(300) < 0.2, 1 - y, y)  # candidate wrong on ~20%
    worse = _probs(np.where(flipped == 1, 0.8, 0.2))
    ni = non_inferiority(good, worse, y, margin=0.05, n_bootstrap=300)
    assert not ni["non_inferior"] and ni["ci"][1] < 0
    with pytest.raises(InvalidInputError):
        non_inferiority(good, worse, y, metric="f2")


def _two_class(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.random.default_rng(seed).integers(0, 2, n)
    return y, np.where(y[:, None] == np.arange(2), 2.0, -2.0)


def test_default_gate_counts_its_samples():
    # one flipped case of 80 (the AVX2 demo's mobile verdict): -0.0125 accuracy, inside the CI
    y, ref = _two_class(80, 3)
    cand = ref.copy()
    cand[0] *= -1
    g = run_gate(ref, cand, y, GateConfig())
    assert g.passed, g.reasons
    assert set(g.non_inferiority) == {"accuracy", "auc"}
    acc = g.non_inferiority["accuracy"]
    assert acc["difference"] == pytest.approx(-1 / 80) and acc["ci"][0] > -0.05
    assert acc["n"] == 80 and "n=80" in g.summary() and "acc -0.01" in g.summary()
    # a reference right on 90% of 80 cases: its own 95% CI (+/-0.066) is wider than the margin
    wrong = ref.copy()
    wrong[10:18] *= -1
    assert run_gate(wrong, wrong.copy(), y, GateConfig(bootstrap=100)).warnings[0].startswith("n=80")
    # many flips: the CI's lower bound crosses the margin, whatever the point estimate says
    bad = ref.copy()
    bad[:8] *= -1
    g = run_gate(ref, bad, y, GateConfig())
    assert not g.passed and "not non-inferior on accuracy" in g.reasons[0]


def test_gate_absolute_limits_stay_options():
    y, ref = _two_class(60, 3)
    cand = ref.copy()
    cand[:2] *= -1  # two flips: accuracy drop 3.3 points
    assert not run_gate(ref, cand, y, GateConfig(decision="absolute")).passed  # 0.01 default
    loose = GateConfig(decision="absolute", max_accuracy_drop=0.05, max_auc_drop=0.1)
    g = run_gate(ref, cand, y, loose)
    assert g.passed and g.non_inferiority is None
    both = GateConfig(max_accuracy_drop=0.02, bootstrap=200)  # NI and an absolute limit
    g = run_gate(ref, cand, y, both)
    assert not g.passed and any("accuracy dropped" in r for r in g.reasons)
    strict = GateConfig(non_inferiority_margin=0.02, bootstrap=200)
    g = run_gate(ref, cand, y, strict)
    assert not g.passed and "non-inferior" in g.reasons[0]
    assert g.to_dict()["non_inferiority"]["accuracy"]["margin"] == 0.02


def test_no_warning_when_the_set_is_large_enough():
    y, ref = _two_class(2000, 4)
    assert not run_gate(ref, ref.copy(), y, GateConfig(bootstrap=100)).warnings


def test_existing_api_unchanged():
    y = np.array([0, 1, 0, 1])
    m = classification_metrics(_probs([0.1, 0.9, 0.2, 0.7]), y)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0
    a = agreement(np.eye(2)[y], np.eye(2)[y])
    assert a["top1_agreement"] == 1.0
    with pytest.raises(InvalidInputError):
        check_labels(np.zeros(4, int), 2)
    cis = bootstrap_cis(_probs([0.1, 0.9, 0.2, 0.7]), y, n_bootstrap=100)
    assert cis["accuracy"] == (1.0, 1.0)


def test_bad_inputs():
    with pytest.raises(InvalidInputError):
        clinical_report(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(InvalidInputError):
        expected_calibration_error(np.full((2, 2), np.nan), np.array([0, 1]))
