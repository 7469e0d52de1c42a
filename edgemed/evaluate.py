"""Clinical metrics and the accuracy gate (FP32 reference vs compressed candidate).

With labels: accuracy, precision, recall (= sensitivity), F1, AUC-ROC, specificity, per the
positive class (binary) or macro-averaged (multi-class), plus agreement with the reference.
Without labels: agreement only (top-1 agreement and logit cosine), and the report says so.

``clinical_report`` adds per-class figures, sensitivity at a fixed specificity, the confusion
matrix, the expected calibration error and percentile bootstrap confidence intervals;
``non_inferiority`` decides whether a compressed model is non-inferior to the FP32 reference
(the lower bound of the paired bootstrap CI of candidate minus reference above ``-margin``):
the gate's default decision with labels, per metric, so it counts its samples (with 80 images
one point of accuracy is one image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field

from .errors import InvalidInputError
from .passes.base import PassConfig


class GateConfig(PassConfig):
    """How the accuracy gate decides (differences are candidate minus reference).

    With labels the default decision counts its samples: per metric in
    ``non_inferiority_metrics``, the paired bootstrap CI of (candidate - reference) must stay
    above ``-non_inferiority_margin``, and top-1 agreement with the reference must reach
    ``min_labelled_agreement``. ``max_accuracy_drop`` / ``max_auc_drop`` add absolute limits on
    the point estimates (``decision = "absolute"`` uses them alone, 0.01 each when unset).
    Without labels: top-1 agreement >= ``min_agreement`` and logit cosine >= ``min_cosine``.
    """

    decision: Literal["non-inferiority", "absolute"] = "non-inferiority"
    non_inferiority_metrics: tuple[Literal["accuracy", "sensitivity", "specificity", "auc"], ...] = (
        "accuracy", "auc")
    non_inferiority_margin: float = Field(0.05, gt=0, le=1)
    min_labelled_agreement: float = Field(0.95, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0)
    max_auc_drop: float | None = Field(None, ge=0)
    min_agreement: float = Field(0.98, ge=0, le=1)
    min_cosine: float = Field(0.99, ge=-1, le=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    bootstrap_seed: int = 0

    def describe(self, labelled: bool = True) -> str:
        """The rule in words (for error messages and reports)."""
        if not labelled:
            return (f"top-1 agreement >= {self.min_agreement} and logit cosine >= "
                    f"{self.min_cosine} (no labels)")
        parts = []
        if self.decision == "non-inferiority":
            parts.append(f"non-inferior on {', '.join(self.non_inferiority_metrics)} (lower "
                         f"{self.confidence:.0%} CI bound of the paired difference > "
                         f"-{self.non_inferiority_margin})")
            parts.append(f"top-1 agreement >= {self.min_labelled_agreement}")
        acc, auc = self.absolute_limits()
        if acc is not None:
            parts.append(f"accuracy drop <= {acc}")
        if auc is not None:
            parts.append(f"AUC drop <= {auc}")
        return ", ".join(parts)

    def absolute_limits(self) -> tuple[float | None, float | None]:
        """(max accuracy drop, max AUC drop) in force; None where not applied."""
        if self.decision == "absolute":
            return (0.01 if self.max_accuracy_drop is None else self.max_accuracy_drop,
                    0.01 if self.max_auc_drop is None else self.max_auc_drop)
        return self.max_accuracy_drop, self.max_auc_drop


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
    """The gate's verdict with every figure it used.

    ``non_inferiority`` maps each metric to ``non_inferiority()``'s result; ``warnings`` says when
    the validation set is too small for the margin to mean much; ``evaluator`` names how the
    candidate's outputs were computed (set by the build).
    """

    passed: bool
    labelled: bool
    reference: dict[str, float]
    candidate: dict[str, float]
    agreement: dict[str, float]
    reasons: tuple[str, ...] = field(default_factory=tuple)
    n: int = 0
    non_inferiority: dict[str, dict[str, Any]] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    evaluator: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["warnings"] = list(self.warnings)
        d["mode"] = "labels" if self.labelled else "agreement only (no labels given)"
        return d

    def summary(self) -> str:
        """One line: n, per non-inferiority metric the difference and its CI, agreement."""
        return gate_summary(self.to_dict())


def gate_summary(gate: Mapping[str, Any] | None) -> str:
    """``GateResult.to_dict()`` (as stored in artifact metrics) in one line for tables."""
    if not gate:
        return "–"
    a = gate.get("agreement") or {}
    parts = [f"n={gate.get('n', '?')}"]
    if not gate.get("labelled"):
        parts.append(f"agree {a.get('top1_agreement', float('nan')):.3f}")
        parts.append(f"cosine {a.get('logit_cosine', float('nan')):.4f}")
        return " ".join(parts)
    short = {"accuracy": "acc", "sensitivity": "sens", "specificity": "spec", "auc": "auc"}
    for m, r in (gate.get("non_inferiority") or {}).items():
        lo, hi = r["ci"]
        parts.append(f"{short.get(m, m)} {r['difference']:+.3f} [{lo:+.3f},{hi:+.3f}]")
    if not gate.get("non_inferiority"):
        ref, cand = gate.get("reference") or {}, gate.get("candidate") or {}
        if "accuracy" in ref and "accuracy" in cand:
            parts.append(f"acc {cand['accuracy'] - ref['accuracy']:+.3f}")
    if "top1_agreement" in a:
        parts.append(f"agree {a['top1_agreement']:.3f}")
    return " ".join(parts)


def small_sample_warning(ref_probs: np.ndarray, y: np.ndarray, cfg: GateConfig) -> str:
    """A warning when the reference accuracy's own CI is wider than the margin ('' if not).

    With 80 images one case is 0.0125 of accuracy: a margin below the set's own sampling error
    cannot tell a real loss from chance, whichever way the verdict goes.
    """
    n = len(y)
    acc = float((ref_probs.argmax(1) == y).mean())
    z = _z(cfg.confidence)
    half = z * float(np.sqrt(max(acc * (1 - acc), 1.0 / n) / n))
    if half <= cfg.non_inferiority_margin:
        return ""
    return (f"n={n} validation cases: one case moves accuracy by {1 / n:.4f}, and the reference "
            f"accuracy's own {cfg.confidence:.0%} CI is about +/-{half:.3f}, wider than the margin "
            f"{cfg.non_inferiority_margin}; add cases (about {int(np.ceil(n * (half / cfg.non_inferiority_margin) ** 2))} "
            "for this margin) for a verdict that means more")


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(0.5 + confidence / 2))


def run_gate(ref_logits: np.ndarray, cand_logits: np.ndarray, y: np.ndarray | None,
             cfg: GateConfig) -> GateResult:
    """Compare candidate to reference on the validation set; return the verdict.

    Args:
        ref_logits / cand_logits: (N, K) outputs of the FP32 reference and the candidate.
        y: integer labels (N,), or None (agreement-only gate).
    """
    from edgemed_runtime.sdk import softmax

    agree = agreement(ref_logits, cand_logits)
    reasons: list[str] = []
    warns: list[str] = []
    ni: dict[str, dict[str, Any]] = {}
    ref_m: dict[str, float] = {}
    cand_m: dict[str, float] = {}
    if y is not None:
        ref_p = softmax(ref_logits.astype(np.float64))
        cand_p = softmax(cand_logits.astype(np.float64))
        ref_m = classification_metrics(ref_p, y)
        cand_m = classification_metrics(cand_p, y)
        if cfg.decision == "non-inferiority":
            ni = non_inferiority_all(ref_p, cand_p, y, metrics=cfg.non_inferiority_metrics,
                                     margin=cfg.non_inferiority_margin,
                                     confidence=cfg.confidence, n_bootstrap=cfg.bootstrap,
                                     seed=cfg.bootstrap_seed)
            for metric, r in ni.items():
                if not r["non_inferior"]:
                    reasons.append(
                        f"not non-inferior on {metric}: difference {r['difference']:+.4f}, "
                        f"{cfg.confidence:.0%} CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] "
                        f"crosses -{r['margin']} (n={r['n']})")
            if agree["top1_agreement"] < cfg.min_labelled_agreement:
                reasons.append(f"top-1 agreement {agree['top1_agreement']:.4f} < "
                               f"{cfg.min_labelled_agreement}")
            if w := small_sample_warning(ref_p, y, cfg):
                warns.append(w)
        max_acc, max_auc = cfg.absolute_limits()
        if max_acc is not None and ref_m["accuracy"] - cand_m["accuracy"] > max_acc + 1e-12:
            reasons.append(f"accuracy dropped {ref_m['accuracy'] - cand_m['accuracy']:.4f} "
                           f"> {max_acc}")
        if max_auc is not None and ref_m["auc"] - cand_m["auc"] > max_auc + 1e-12:
            reasons.append(f"AUC dropped {ref_m['auc'] - cand_m['auc']:.4f} > {max_auc}")
    else:
        if agree["top1_agreement"] < cfg.min_agreement:
            reasons.append(f"top-1 agreement {agree['top1_agreement']:.4f} < {cfg.min_agreement}")
        if agree["logit_cosine"] < cfg.min_cosine:
            reasons.append(f"logit cosine {agree['logit_cosine']:.4f} < {cfg.min_cosine}")
    return GateResult(not reasons, y is not None, ref_m, cand_m, agree, tuple(reasons),
                      int(len(ref_logits)), ni or None, tuple(warns))


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
    w = np.ones((1, len(y))) if idx is None else _counts(idx[None, :], len(y))
    return {k: float(v[0]) for k, v in _weighted_metrics(probs, y, w).items()}


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Resample indices (B, m) -> how often each case is drawn (B, n)."""
    w = np.zeros((len(idx), n))
    np.add.at(w, (np.arange(len(idx))[:, None], idx), 1.0)
    return w


def _weighted_metrics(probs: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """The ``_point_metrics`` of B weighted resamples at once (``w``: (B, n) case counts).

    AUC is the Mann-Whitney statistic with ties counted half, per class against the rest and
    macro-averaged for K > 2 (what scikit-learn's ``roc_auc_score`` computes); NaN where a
    resample lacks a class it needs. Vectorised so a 1000-resample bootstrap takes milliseconds.
    """
    k = probs.shape[1]
    pred = probs.argmax(1)
    total = w.sum(1)
    out = {"accuracy": w @ (pred == y).astype(np.float64) / total}
    classes = [1] if k == 2 else list(range(k))
    sens, spec, aucs = [], [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in classes:
            pos, neg = y == c, y != c
            wp, wn = w[:, pos], w[:, neg]
            npos, nneg = wp.sum(1), wn.sum(1)
            sens.append(wp @ (pred[pos] == c).astype(np.float64) / npos)
            spec.append(wn @ (pred[neg] != c).astype(np.float64) / nneg)
            score = probs[:, c] if k > 2 else probs[:, 1]
            if pos.sum() * neg.sum() <= _PAIRWISE_MAX:
                sp, sn = score[pos][:, None], score[neg][None, :]
                wins = (sp > sn) + 0.5 * (sp == sn)  # (n_pos, n_neg)
                aucs.append(np.einsum("bi,ij,bj->b", wp, wins, wn) / (npos * nneg))
            else:
                aucs.append(np.array([_auc_ranked(score, pos, row) for row in w]))
        sens_a, spec_a, auc_a = np.array(sens), np.array(spec), np.array(aucs)
        out["sensitivity"] = _nanmean0(sens_a)
        out["specificity"] = _nanmean0(spec_a)
        # scikit-learn needs every class present for a multi-class AUC
        out["auc"] = auc_a[0] if k == 2 else np.where(np.isnan(auc_a).any(0), np.nan,
                                                       auc_a.mean(0) if len(auc_a) else np.nan)
    return out


_PAIRWISE_MAX = 4_000_000  # positive x negative pairs held as one matrix; beyond: ranks


def _auc_ranked(score: np.ndarray, pos: np.ndarray, w: np.ndarray) -> float:
    """Weighted Mann-Whitney AUC of one resample by sorting (ties count half)."""
    order = np.argsort(score, kind="mergesort")
    s, p, ww = score[order], pos[order], w[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wp_g = np.add.reduceat(ww * p, starts)
    wn_g = np.add.reduceat(ww * ~p, starts)
    denom = wp_g.sum() * wn_g.sum()
    if denom == 0:
        return float("nan")
    return float((wp_g * (np.cumsum(wn_g) - wn_g + 0.5 * wn_g)).sum() / denom)


def _nanmean0(a: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN where a column is all NaN (no warning)."""
    ok = ~np.isnan(a)
    n = ok.sum(0)
    return np.where(n > 0, np.where(ok, a, 0.0).sum(0) / np.maximum(n, 1), np.nan)


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
    w = _counts(_resamples(len(y), n_bootstrap, seed), len(y))
    return {k: _interval(v, confidence) for k, v in _weighted_metrics(probs, y, w).items()}


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
    return non_inferiority_all(ref_probs, cand_probs, y, metrics=(metric,), margin=margin,
                               confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)[metric]


def non_inferiority_all(ref_probs: np.ndarray, cand_probs: np.ndarray, y: np.ndarray, *,
                        metrics: tuple[str, ...], margin: float = 0.05,
                        confidence: float = 0.95, n_bootstrap: int = 1000, seed: int = 0
                        ) -> dict[str, dict[str, Any]]:
    """``non_inferiority`` for each of ``metrics``, on one set of paired resamples (each model's
    metrics computed once). Returns {metric: result}. Raises InvalidInputError as it does."""
    ref_probs, y = _check_probs(ref_probs, y)
    cand_probs, _ = _check_probs(cand_probs, y)
    if ref_probs.shape != cand_probs.shape:
        raise InvalidInputError("reference and candidate outputs differ in shape",
                                expected=str(ref_probs.shape), found=str(cand_probs.shape))
    for metric in metrics:
        if metric not in ("accuracy", "sensitivity", "specificity", "auc"):
            raise InvalidInputError("unknown non-inferiority metric",
                                    expected="accuracy, sensitivity, specificity or auc",
                                    found=metric)
    point_c, point_r = _point_metrics(cand_probs, y), _point_metrics(ref_probs, y)
    w = _counts(_resamples(len(y), n_bootstrap, seed), len(y))
    boot_c, boot_r = _weighted_metrics(cand_probs, y, w), _weighted_metrics(ref_probs, y, w)
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        lo, hi = _interval(boot_c[metric] - boot_r[metric], confidence)
        out[metric] = {"metric": metric, "margin": margin,
                       "difference": float(point_c[metric] - point_r[metric]), "ci": (lo, hi),
                       "confidence": confidence,
                       "non_inferior": bool(np.isfinite(lo) and lo > -margin),
                       "n": int(len(y)), "n_bootstrap": int(n_bootstrap)}
    return out


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
