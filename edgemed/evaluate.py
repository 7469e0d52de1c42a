"""Clinical metrics and the accuracy gate (FP32 reference vs compressed candidate).

With labels: accuracy, precision, recall (= sensitivity), F1, AUC-ROC, specificity, per the
positive class (binary) or macro-averaged (multi-class), plus agreement with the reference.
Without labels: agreement only (top-1 agreement and logit cosine), and the report says so.

``clinical_report`` adds per-class figures, sensitivity at a fixed specificity, the confusion
matrix, the expected calibration error and percentile bootstrap confidence intervals;
``non_inferiority`` decides whether a compressed model is non-inferior to the FP32 reference
(the lower bound of the paired bootstrap CI of candidate minus reference above ``-margin``),
which the gate requires when ``GateConfig.require_non_inferiority`` is set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from .errors import InvalidInputError
from .passes.base import PassConfig


class GateConfig(PassConfig):
    """Limits of the accuracy gate (drops are reference minus candidate)."""

    max_accuracy_drop: float = Field(0.01, ge=0)
    max_auc_drop: float = Field(0.01, ge=0)
    min_agreement: float = Field(0.98, ge=0, le=1)
    min_cosine: float = Field(0.99, ge=-1, le=1)
    require_non_inferiority: bool = False
    non_inferiority_metric: Literal["accuracy", "sensitivity", "specificity", "auc"] = "accuracy"
    non_inferiority_margin: float = Field(0.05, gt=0, le=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    bootstrap_seed: int = 0


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Metrics of class probabilities (N, K) against integer labels (N,)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    k = probs.shape[1]
    pred = probs.argmax(1)
    acc = float((pred == y).mean())
    if k == 2:
        p, r, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        spec = float(tn / (tn + fp)) if (tn + fp) else 0.0
        auc = float(roc_auc_score(y, probs[:, 1]))
    else:
        p, r, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        cm = confusion_matrix(y, pred, labels=list(range(k)))
        tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
        fp = cm.sum(0) - np.diag(cm)
        spec = float(np.mean(tn / np.maximum(tn + fp, 1)))
        auc = float(roc_auc_score(y, probs, multi_class="ovr", labels=list(range(k))))
    return {"accuracy": acc, "precision": float(p), "recall": float(r), "sensitivity": float(r),
            "specificity": spec, "f1": float(f1), "auc": auc}


def agreement(ref_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean logit cosine between reference and candidate outputs."""
    from .passes.export_onnx import cosine

    return {"top1_agreement": float((ref_logits.argmax(1) == logits.argmax(1)).mean()),
            "logit_cosine": cosine(ref_logits, logits),
            "max_abs_logit_diff": float(np.max(np.abs(ref_logits - logits)))}


def check_labels(y: np.ndarray | None, n_classes: int) -> None:
    """Raise InvalidInputError when a labelled validation set cannot measure the metrics."""
    if y is None:
        return
    present = np.unique(y)
    if len(present) < 2:
        raise InvalidInputError(
            "the validation set has only one class", expected="samples of at least 2 classes",
            found=f"{len(y)} samples, all of class {int(present[0]) if len(present) else '-'}",
            fix="add samples of the other class(es); AUC, sensitivity and specificity need both",
            code="one-class",
        )
    if present.max() >= n_classes:
        raise InvalidInputError("label index beyond the model's outputs",
                                expected=f"< {n_classes}", found=str(int(present.max())))


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict with every figure it used."""

    passed: bool
    labelled: bool
    reference: dict[str, float]
    candidate: dict[str, float]
    agreement: dict[str, float]
    reasons: tuple[str, ...] = field(default_factory=tuple)
    n: int = 0
    non_inferiority: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["mode"] = "labels" if self.labelled else "agreement only (no labels given)"
        return d


def run_gate(ref_logits: np.ndarray, cand_logits: np.ndarray, y: np.ndarray | None,
             cfg: GateConfig) -> GateResult:
    """Compare candidate to reference on the validation set; return the verdict."""
    from edgemed_runtime.session import softmax

    agree = agreement(ref_logits, cand_logits)
    reasons = []
    ni: dict[str, Any] = {}
    ref_m: dict[str, float] = {}
    cand_m: dict[str, float] = {}
    if y is not None:
        ref_m = classification_metrics(softmax(ref_logits.astype(np.float64)), y)
        cand_m = classification_metrics(softmax(cand_logits.astype(np.float64)), y)
        if ref_m["accuracy"] - cand_m["accuracy"] > cfg.max_accuracy_drop + 1e-12:
            reasons.append(f"accuracy dropped {ref_m['accuracy'] - cand_m['accuracy']:.4f} "
                           f"> {cfg.max_accuracy_drop}")
        if ref_m["auc"] - cand_m["auc"] > cfg.max_auc_drop + 1e-12:
            reasons.append(f"AUC dropped {ref_m['auc'] - cand_m['auc']:.4f} > {cfg.max_auc_drop}")
        if cfg.require_non_inferiority:
            ni = non_inferiority(softmax(ref_logits.astype(np.float64)),
                                 softmax(cand_logits.astype(np.float64)), y,
                                 metric=cfg.non_inferiority_metric,
                                 margin=cfg.non_inferiority_margin, confidence=cfg.confidence,
                                 n_bootstrap=cfg.bootstrap, seed=cfg.bootstrap_seed)
            if not ni["non_inferior"]:
                reasons.append(
                    f"not non-inferior on {ni['metric']}: CI of the difference "
                    f"[{ni['ci'][0]:.4f}, {ni['ci'][1]:.4f}] crosses -{ni['margin']}")
    else:
        if agree["top1_agreement"] < cfg.min_agreement:
            reasons.append(f"top-1 agreement {agree['top1_agreement']:.4f} < {cfg.min_agreement}")
        if agree["logit_cosine"] < cfg.min_cosine:
            reasons.append(f"logit cosine {agree['logit_cosine']:.4f} < {cfg.min_cosine}")
    return GateResult(not reasons, y is not None, ref_m, cand_m, agree, tuple(reasons),
                      int(len(ref_logits)), ni if y is not None and cfg.require_non_inferiority
                      else None)


# ---------------------------------------------------------------- clinical report, CIs, NI


def _check_probs(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if probs.ndim != 2 or probs.shape[1] < 2 or len(probs) != len(y) or len(y) == 0:
        raise InvalidInputError(
            "probabilities and labels do not match", expected="probs (N, K>=2) and labels (N,)",
            found=f"probs {probs.shape}, labels {y.shape}", code="shape-mismatch")
    if not np.all(np.isfinite(probs)):
        raise InvalidInputError("probabilities are not finite", expected="finite values",
                                found="NaN or inf", fix="check the model's outputs")
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise InvalidInputError("label index beyond the model's outputs",
                                expected=f"0..{probs.shape[1] - 1}", found=str(int(y.max())))
    return probs, y.astype(np.int64)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE: mean |confidence - accuracy| over equal-width confidence bins, weighted by count."""
    probs, y = _check_probs(probs, y)
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)


def sensitivity_at_specificity(scores: np.ndarray, positive: np.ndarray,
                               specificity: float = 0.9) -> dict[str, float]:
    """Best sensitivity whose specificity is >= ``specificity`` on the ROC curve, and its threshold.

    Args:
        scores: the positive-class score per sample; positive: boolean truth.
    """
    from sklearn.metrics import roc_curve

    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        return {"sensitivity": float("nan"), "specificity": float("nan"), "threshold": float("nan")}
    fpr, tpr, thr = roc_curve(positive, scores)
    ok = (1.0 - fpr) >= specificity - 1e-12
    i = int(np.flatnonzero(ok)[np.argmax(tpr[ok])])
    return {"sensitivity": float(tpr[i]), "specificity": float(1.0 - fpr[i]),
            "threshold": float(min(thr[i], 1.0))}


def _point_metrics(probs: np.ndarray, y: np.ndarray, idx: np.ndarray | None = None
                   ) -> dict[str, float]:
    """Accuracy, sensitivity, specificity (positive class 1 or macro) and AUC, on ``idx``."""
    from sklearn.metrics import roc_auc_score

    if idx is not None:
        probs, y = probs[idx], y[idx]
    k = probs.shape[1]
    pred = probs.argmax(1)
    out = {"accuracy": float((pred == y).mean())}
    classes = [1] if k == 2 else list(range(k))
    sens, spec = [], []
    for c in classes:
        pos, neg = y == c, y != c
        sens.append((pred[pos] == c).mean() if pos.any() else np.nan)
        spec.append((pred[neg] != c).mean() if neg.any() else np.nan)
    out["sensitivity"] = float(np.nanmean(sens)) if not np.all(np.isnan(sens)) else float("nan")
    out["specificity"] = float(np.nanmean(spec)) if not np.all(np.isnan(spec)) else float("nan")
    present = np.unique(y)
    if len(present) < 2 or (k > 2 and len(present) < k):
        out["auc"] = float("nan")
    elif k == 2:
        out["auc"] = float(roc_auc_score(y, probs[:, 1]))
    else:
        out["auc"] = float(roc_auc_score(y, probs, multi_class="ovr", labels=list(range(k))))
    return out


def _resamples(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2.0
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return (float("nan"), float("nan"))
    return (float(np.percentile(v, 100 * a)), float(np.percentile(v, 100 * (1 - a))))


def bootstrap_cis(probs: np.ndarray, y: np.ndarray, *, n_bootstrap: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs (resampling cases) of accuracy, sensitivity, specificity, AUC."""
    probs, y = _check_probs(probs, y)
    rows = [_point_metrics(probs, y, idx) for idx in _resamples(len(y), n_bootstrap, seed)]
    return {k: _interval(np.array([r[k] for r in rows]), confidence) for k in rows[0]}


def non_inferiority(ref_probs: np.ndarray, cand_probs: np.ndarray, y: np.ndarray, *,
                    metric: str = "accuracy", margin: float = 0.05, confidence: float = 0.95,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Non-inferiority of candidate vs reference on ``metric`` (paired bootstrap over cases).

    The candidate is non-inferior when the lower bound of the two-sided ``confidence`` CI of
    (candidate - reference) is above ``-margin``.
    Returns:
        {"metric", "margin", "difference", "ci": (lo, hi), "non_inferior", "n", "n_bootstrap"}.
    Raises:
        InvalidInputError: mismatched shapes or an unknown metric.
    """
    ref_probs, y = _check_probs(ref_probs, y)
    cand_probs, _ = _check_probs(cand_probs, y)
    if ref_probs.shape != cand_probs.shape:
        raise InvalidInputError("reference and candidate outputs differ in shape",
                                expected=str(ref_probs.shape), found=str(cand_probs.shape))
    if metric not in ("accuracy", "sensitivity", "specificity", "auc"):
        raise InvalidInputError("unknown non-inferiority metric",
                                expected="accuracy, sensitivity, specificity or auc", found=metric)
    diff = _point_metrics(cand_probs, y)[metric] - _point_metrics(ref_probs, y)[metric]
    diffs = np.array([_point_metrics(cand_probs, y, idx)[metric]
                      - _point_metrics(ref_probs, y, idx)[metric]
                      for idx in _resamples(len(y), n_bootstrap, seed)])
    lo, hi = _interval(diffs, confidence)
    return {"metric": metric, "margin": margin, "difference": float(diff), "ci": (lo, hi),
            "confidence": confidence, "non_inferior": bool(np.isfinite(lo) and lo > -margin),
            "n": int(len(y)), "n_bootstrap": int(n_bootstrap)}


def clinical_report(probs: np.ndarray, y: np.ndarray, class_names: tuple[str, ...] | None = None,
                    *, fixed_specificity: float = 0.9, n_bootstrap: int = 1000,
                    confidence: float = 0.95, seed: int = 0, ece_bins: int = 15
                    ) -> dict[str, Any]:
    """Every clinical figure of one model on a labelled set.

    Args:
        probs: class probabilities (N, K); y: integer labels (N,).
        class_names: names in output order (default ``class0``...).
    Returns:
        {"n", "overall": metrics, "ci": {metric: (lo, hi)}, "per_class": {name: {...}},
         "confusion_matrix": {"labels", "matrix"}, "ece", "sensitivity_at_specificity"}.
    Raises:
        InvalidInputError: mismatched shapes, non-finite probabilities, bad labels.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    probs, y = _check_probs(probs, y)
    k = probs.shape[1]
    names = tuple(class_names) if class_names else tuple(f"class{i}" for i in range(k))
    if len(names) != k:
        raise InvalidInputError("class names do not match the outputs", expected=str(k),
                                found=str(len(names)))
    pred = probs.argmax(1)
    overall = classification_metrics(probs, y) if len(np.unique(y)) > 1 else {
        "accuracy": float((pred == y).mean())}
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=list(range(k)),
                                                        zero_division=0)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(names):
        pos = y == c
        tn = int(((pred != c) & ~pos).sum())
        fp = int(((pred == c) & ~pos).sum())
        auc_c = float(roc_auc_score(pos, probs[:, c])) if 0 < pos.sum() < len(y) else float("nan")
        per_class[name] = {
            "precision": float(p[c]), "recall": float(r[c]), "sensitivity": float(r[c]),
            "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
            "f1": float(f1[c]), "auc": auc_c, "support": int(support[c]),
            "sensitivity_at_specificity": sensitivity_at_specificity(
                probs[:, c], pos, fixed_specificity),
        }
    positive = names[1] if k == 2 else None
    sens_at = (per_class[positive]["sensitivity_at_specificity"] if positive else
               {"macro_sensitivity": float(np.nanmean([v["sensitivity_at_specificity"]["sensitivity"]
                                                      for v in per_class.values()]))})
    return {
        "n": int(len(y)), "overall": overall,
        "ci": bootstrap_cis(probs, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed),
        "confidence": confidence, "per_class": per_class,
        "confusion_matrix": {"labels": list(names), "matrix": cm.tolist(),
                             "rows": "true", "columns": "predicted"},
        "ece": expected_calibration_error(probs, y, ece_bins),
        "sensitivity_at_specificity": {"specificity_target": fixed_specificity, **sens_at},
    }
