"""Clinical metrics and the accuracy gate (FP32 reference vs compressed candidate).

With labels: accuracy, precision, recall (= sensitivity), F1, AUC-ROC, specificity, per the
positive class (binary) or macro-averaged (multi-class), plus agreement with the reference.
Without labels: agreement only (top-1 agreement and logit cosine), and the report says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    else:
        if agree["top1_agreement"] < cfg.min_agreement:
            reasons.append(f"top-1 agreement {agree['top1_agreement']:.4f} < {cfg.min_agreement}")
        if agree["logit_cosine"] < cfg.min_cosine:
            reasons.append(f"logit cosine {agree['logit_cosine']:.4f} < {cfg.min_cosine}")
    return GateResult(not reasons, y is not None, ref_m, cand_m, agree, tuple(reasons),
                      int(len(ref_logits)))
