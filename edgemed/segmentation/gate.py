"""The segmentation gate: a compressed candidate's label volumes against the FP32 reference's.

With ground truth (the default decision, mirroring ``edgemed.evaluate``'s classification gate):
per case and per label Dice, HD95 (mm) and surface Dice of each model (``case_metrics``); the
paired bootstrap CI (cases resampled, the same resamples for both models) of candidate minus
reference mean Dice, HD95 and surface Dice; the candidate is non-inferior when the lower CI bound
of the mean-Dice difference is >= ``-non_inferiority_margin`` (0.01). Without ground truth: the
gate is agreement with FP32, the Dice of candidate vs reference labels, whose lower CI bound must
reach ``min_agreement_dice``, and the result says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import Field

from ..errors import InvalidInputError
from ..evaluate import _counts, _interval, _resamples
from ..passes.base import PassConfig
from .metrics import (
    METRICS,
    case_metrics,
    check_label_names,
    check_spacing,
    empty_counts,
    metric_settings,
)

AGREEMENT_MODE = "agreement with FP32 (no ground truth)"
_NO_TRUTH = "no ground truth given: the gate compares the candidate with the FP32 reference only"


class SegGateConfig(PassConfig):
    """How the segmentation gate decides (differences are candidate minus reference).

    ``decision = "non-inferiority"``: per metric in ``non_inferiority_metrics`` the lower bound
    of the paired bootstrap CI of the mean difference must be >= ``-non_inferiority_margin``.
    ``max_dice_drop`` adds an absolute limit on the mean-Dice point estimate
    (``decision = "absolute"`` uses it alone, 0.01 when unset). Without ground truth: the lower
    CI bound of the mean candidate-vs-reference Dice >= ``min_agreement_dice``.
    ``tolerance_mm`` is surface Dice's tolerance; fewer than ``min_cases`` cases warn.
    """

    decision: Literal["non-inferiority", "absolute"] = "non-inferiority"
    non_inferiority_metrics: tuple[Literal["dice", "surface_dice"], ...] = Field(
        ("dice",), min_length=1)
    non_inferiority_margin: float = Field(0.01, gt=0, le=1)
    max_dice_drop: float | None = Field(None, ge=0)
    min_agreement_dice: float = Field(0.95, ge=0, le=1)
    tolerance_mm: float = Field(2.0, gt=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap: int = Field(1000, ge=100, le=100_000)
    bootstrap_seed: int = 0
    min_cases: int = Field(10, ge=1)

    def absolute_limit(self) -> float | None:
        """The mean-Dice drop limit in force; None where not applied."""
        if self.decision == "absolute":
            return 0.01 if self.max_dice_drop is None else self.max_dice_drop
        return self.max_dice_drop

    def describe(self, labelled: bool = True) -> str:
        """The rule in words (for reasons and reports)."""
        if not labelled:
            return (f"{AGREEMENT_MODE}: lower {self.confidence:.0%} CI bound of the mean Dice of "
                    f"candidate vs FP32 labels >= {self.min_agreement_dice}")
        parts = []
        if self.decision == "non-inferiority":
            parts.append(f"non-inferior on mean {', '.join(self.non_inferiority_metrics)} (lower "
                         f"{self.confidence:.0%} CI bound of the paired difference >= "
                         f"-{self.non_inferiority_margin})")
        if (limit := self.absolute_limit()) is not None:
            parts.append(f"mean Dice drop <= {limit}")
        return ", ".join(parts)


@dataclass(frozen=True)
class SegGateResult:
    """The segmentation gate's verdict with every figure it used.

    ``reference`` / ``candidate``: mean Dice, HD95 (mm), surface Dice over cases and labels
    (None without ground truth); ``agreement``: the same of candidate vs reference labels, with
    the mean Dice's CI; ``per_case``: each case's per-label figures; ``differences``: per metric
    the paired bootstrap CI of candidate minus reference; ``non_inferiority``: the gated metrics'
    verdicts (``edgemed.evaluate.non_inferiority``'s fields); ``worst_drop``: the case and label
    with the largest Dice drop (lowest agreement without ground truth); ``empty_masks``: per
    label how many cases each empty-mask rule decided; ``absent``: why a field is None.
    """

    passed: bool
    labelled: bool
    labels: tuple[str, ...]
    n: int
    reference: dict[str, float] | None
    candidate: dict[str, float] | None
    agreement: dict[str, Any]
    per_case: tuple[dict[str, Any], ...]
    per_label: dict[str, dict[str, Any]]
    differences: dict[str, dict[str, Any]] | None
    non_inferiority: dict[str, dict[str, Any]] | None
    worst_drop: dict[str, Any]
    empty_masks: dict[str, dict[str, dict[str, int]]]
    metric_settings: dict[str, Any]
    rule: str
    decision: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    absent: dict[str, str] = field(default_factory=dict)
    evaluator: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, plain floats, no NaN), with ``mode`` and ``task`` added."""
        d = asdict(self)
        d["mode"] = "labels" if self.labelled else AGREEMENT_MODE
        d["task"] = "segmentation"
        return _json_ready(d)

    def summary(self) -> str:
        """One line: n, the mean-Dice difference and its CI (or agreement), worst case, verdict."""
        return seg_gate_summary(self.to_dict())


def run_segmentation_gate(ref: Sequence[np.ndarray], cand: Sequence[np.ndarray],
                          truth: Sequence[np.ndarray] | None, *, labels: tuple[str, ...],
                          spacings: Sequence[Sequence[float]],
                          cfg: SegGateConfig | None = None) -> SegGateResult:
    """Gate the candidate's label volumes against the reference's, per case.

    Args:
        ref / cand: per case, the FP32 reference's and the candidate's integer label volumes
            (z, y, x); truth: the ground-truth volumes, or None (agreement-only gate).
        labels: names of labels 1..K (0 is background); spacings: per case (z, y, x) in mm.
    Returns:
        SegGateResult (``passed`` and ``reasons``; every figure used).
    Raises:
        InvalidInputError: ``empty`` (no cases), ``shape-mismatch`` (list lengths differ),
        ``mask-grid`` (a case's volumes on different grids), ``bad-labels``, ``bad-spacing``.
    """
    cfg = cfg or SegGateConfig()
    labels = check_label_names(labels)
    n = _check_cases(ref, cand, truth, spacings)
    tables = _measure(ref, cand, truth, labels=labels, spacings=spacings, cfg=cfg)
    w = _counts(_resamples(n, cfg.bootstrap, cfg.bootstrap_seed), n)
    agree_dice = _array(tables["agreement"], labels, "dice").mean(1)
    lo, hi = _interval(w @ agree_dice / n, cfg.confidence)
    agreement = {**_means(tables["agreement"], labels), "dice_ci": (lo, hi),
                 "confidence": cfg.confidence, "min_agreement_dice": cfg.min_agreement_dice}
    warns = _warnings(tables, labels, n=n, w=w, cfg=cfg)
    common = dict(labels=labels, n=n, agreement=agreement, per_case=_per_case(tables),
                  per_label=_per_label(tables, labels),
                  empty_masks={k: empty_counts(v) for k, v in tables.items()},
                  metric_settings=metric_settings(cfg.tolerance_mm), decision=cfg.decision,
                  rule=cfg.describe(truth is not None))
    if truth is None:
        reasons = [] if lo >= cfg.min_agreement_dice else [
            f"agreement with FP32: mean Dice {float(agree_dice.mean()):.4f}, {cfg.confidence:.0%} "
            f"CI [{lo:.4f}, {hi:.4f}], lower bound < {cfg.min_agreement_dice} (n={n})"]
        return SegGateResult(
            not reasons, False, reference=None, candidate=None, differences=None,
            non_inferiority=None, worst_drop=_worst(tables, labels, labelled=False),
            reasons=tuple(reasons), warnings=tuple(warns),
            absent={k: _NO_TRUTH for k in ("reference", "candidate", "differences",
                                           "non_inferiority")}, **common)
    diffs = {m: _paired(tables, labels, m, w=w, cfg=cfg) for m in METRICS}
    ni, reasons = _verdicts(tables, labels, diffs, cfg)
    absent = {} if ni else {"non_inferiority": "decision is 'absolute': no CI is gated"}
    return SegGateResult(
        not reasons, True, reference=_means(tables["reference"], labels),
        candidate=_means(tables["candidate"], labels), differences=diffs,
        non_inferiority=ni or None, worst_drop=_worst(tables, labels, labelled=True),
        reasons=tuple(reasons), warnings=tuple(warns), absent=absent, **common)


def seg_gate_summary(gate: Mapping[str, Any] | None) -> str:
    """``SegGateResult.to_dict()`` (as stored in artifact metrics) in one line for tables."""
    if not gate:
        return "–"
    a = gate.get("agreement") or {}
    w = gate.get("worst_drop") or {}
    parts = [f"n={gate.get('n', '?')}"]
    verdict = "pass" if gate.get("passed") else "fail"
    if not gate.get("labelled"):
        lo, hi = a.get("dice_ci") or (float("nan"), float("nan"))
        dice = a.get("dice", float("nan"))
        parts.append(f"agreement with FP32 (no ground truth): Dice {dice:.4f} [{lo:.4f},{hi:.4f}]")
        if w:
            parts.append(f"lowest {w['agreement_dice']:.3f} (case {w['case']}, {w['label']})")
        return " ".join(parts + [verdict])
    d = gate.get("differences") or {}
    short = {"dice": "Dice", "hd95_mm": "HD95", "surface_dice": "SD"}
    for m, r in d.items():
        lo, hi = r["ci"]
        unit = " mm" if m == "hd95_mm" else ""
        fmt = "+.2f" if m == "hd95_mm" else "+.3f"
        parts.append(f"{short.get(m, m)} {r['difference']:{fmt}} [{lo:{fmt}},{hi:{fmt}}]{unit}")
    if w:
        parts.append(f"worst drop {w['drop']:+.3f} (case {w['case']}, {w['label']})")
    return " ".join(parts + [verdict])


# ---------------------------------------------------------------- steps


def _check_cases(ref: Sequence[np.ndarray], cand: Sequence[np.ndarray],
                 truth: Sequence[np.ndarray] | None, spacings: Sequence[Sequence[float]]) -> int:
    """The number of cases; typed errors when the lists or a case's grids do not match."""
    lists = {"reference": ref, "candidate": cand, "spacings": spacings}
    if truth is not None:
        lists["ground truth"] = truth
    for what, value in lists.items():
        if not hasattr(value, "__len__") or isinstance(value, (str, bytes)):
            raise InvalidInputError(f"the {what} is not a per-case list",
                                    expected="one entry per case", found=type(value).__name__,
                                    code="shape-mismatch")
    n = len(ref)
    if n == 0:
        raise InvalidInputError("the segmentation gate got no cases", expected=">= 1 case",
                                found="0", code="empty")
    counts = {k: len(v) for k, v in lists.items() if k != "reference"}
    if any(c != n for c in counts.values()):
        raise InvalidInputError(
            "the per-case lists differ in length", expected=f"{n} (the reference's cases) each",
            found=", ".join(f"{k} {v}" for k, v in counts.items()), code="shape-mismatch")
    for i in range(n):
        shape = np.shape(ref[i])
        others = {"candidate": np.shape(cand[i])}
        if truth is not None:
            others["ground truth"] = np.shape(truth[i])
        for what, s in others.items():
            if s != shape:
                raise InvalidInputError(
                    f"case {i}: the {what} label volume is on another grid than the reference's",
                    expected=f"shape {shape}", found=f"shape {s}",
                    fix="resample every volume of a case onto one grid", code="mask-grid")
        try:
            check_spacing(spacings[i], len(shape))
        except InvalidInputError as e:
            raise _in_case(i, e) from None
    return n


def _in_case(i: int, e: InvalidInputError) -> InvalidInputError:
    """``e`` with its message prefixed by the case index (same code, expected, found, fix)."""
    return InvalidInputError(f"case {i}: {e.message}", expected=e.expected, found=e.found,
                             fix=e.fix, code=e.code)


def _measure(ref: Sequence[np.ndarray], cand: Sequence[np.ndarray],
             truth: Sequence[np.ndarray] | None, *, labels: tuple[str, ...],
             spacings: Sequence[Sequence[float]], cfg: SegGateConfig
             ) -> dict[str, list[dict[str, dict[str, Any]]]]:
    """``case_metrics`` per case: {"reference", "candidate" (vs truth), "agreement" (vs ref)}."""
    out: dict[str, list[dict[str, dict[str, Any]]]] = {"agreement": []}
    if truth is not None:
        out["reference"], out["candidate"] = [], []
    for i in range(len(ref)):
        pairs = [("agreement", cand[i], ref[i])]
        if truth is not None:
            pairs += [("reference", ref[i], truth[i]), ("candidate", cand[i], truth[i])]
        for key, p, t in pairs:
            try:
                out[key].append(case_metrics(p, t, labels=labels, spacing=spacings[i],
                                             tolerance_mm=cfg.tolerance_mm))
            except InvalidInputError as e:
                raise _in_case(i, e) from None
    return out


def _array(cases: list[dict[str, dict[str, Any]]], labels: Sequence[str], metric: str
           ) -> np.ndarray:
    """One metric of every case and label as (cases, labels) float64."""
    return np.array([[c[name][metric] for name in labels] for c in cases], dtype=np.float64)


def _means(cases: list[dict[str, dict[str, Any]]], labels: Sequence[str]) -> dict[str, float]:
    return {m: float(_array(cases, labels, m).mean()) for m in METRICS}


def _paired(tables: Mapping[str, list[dict[str, dict[str, Any]]]], labels: Sequence[str],
            metric: str, *, w: np.ndarray, cfg: SegGateConfig) -> dict[str, Any]:
    """Mean candidate-minus-reference difference of ``metric`` and its paired bootstrap CI."""
    d = (_array(tables["candidate"], labels, metric)
         - _array(tables["reference"], labels, metric)).mean(1)
    lo, hi = _interval(w @ d / len(d), cfg.confidence)
    return {"metric": metric, "difference": float(d.mean()), "ci": (lo, hi),
            "confidence": cfg.confidence, "n": len(d), "n_bootstrap": cfg.bootstrap,
            "better": "lower" if metric == "hd95_mm" else "higher"}


def _verdicts(tables: Mapping[str, list[dict[str, dict[str, Any]]]], labels: Sequence[str],
              diffs: Mapping[str, dict[str, Any]], cfg: SegGateConfig
              ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Non-inferiority per gated metric, and the reasons the gate fails (empty: it passes)."""
    ni: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    if cfg.decision == "non-inferiority":
        for metric in cfg.non_inferiority_metrics:
            r = diffs[metric]
            ok = bool(np.isfinite(r["ci"][0]) and r["ci"][0] >= -cfg.non_inferiority_margin)
            ni[metric] = {**r, "margin": cfg.non_inferiority_margin, "non_inferior": ok}
            if not ok:
                reasons.append(
                    f"not non-inferior on mean {metric}: difference {r['difference']:+.4f}, "
                    f"{cfg.confidence:.0%} CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] crosses "
                    f"-{cfg.non_inferiority_margin} (n={r['n']})")
    limit = cfg.absolute_limit()
    drop = -diffs["dice"]["difference"]
    if limit is not None and drop > limit + 1e-12:
        reasons.append(f"mean Dice dropped {drop:.4f} > {limit}")
    return ni, reasons


def _worst(tables: Mapping[str, list[dict[str, dict[str, Any]]]], labels: Sequence[str], *,
           labelled: bool) -> dict[str, Any]:
    """The case and label with the largest Dice drop (or, without truth, lowest agreement)."""
    agree = _array(tables["agreement"], labels, "dice")
    if not labelled:
        i, k = np.unravel_index(int(np.argmin(agree)), agree.shape)
        return {"case": int(i), "label": labels[k], "agreement_dice": float(agree[i, k])}
    ref = _array(tables["reference"], labels, "dice")
    cand = _array(tables["candidate"], labels, "dice")
    i, k = np.unravel_index(int(np.argmax(ref - cand)), ref.shape)
    return {"case": int(i), "label": labels[k], "reference": float(ref[i, k]),
            "candidate": float(cand[i, k]), "drop": float(ref[i, k] - cand[i, k]),
            "agreement_dice": float(agree[i, k])}


def _per_case(tables: Mapping[str, list[dict[str, dict[str, Any]]]]) -> tuple[dict[str, Any], ...]:
    n = len(tables["agreement"])
    return tuple({"case": i, **{k: v[i] for k, v in tables.items()}} for i in range(n))


def _per_label(tables: Mapping[str, list[dict[str, dict[str, Any]]]], labels: Sequence[str]
               ) -> dict[str, dict[str, Any]]:
    """Per label, each table's mean of each metric over cases."""
    return {name: {k: {m: float(np.mean([c[name][m] for c in v])) for m in METRICS}
                   for k, v in tables.items()} for name in labels}


def _warnings(tables: Mapping[str, list[dict[str, dict[str, Any]]]], labels: Sequence[str], *,
              n: int, w: np.ndarray, cfg: SegGateConfig) -> list[str]:
    """Few cases, a reference whose own CI is wider than the margin, empty masks."""
    out = []
    if n < cfg.min_cases:
        out.append(f"only {n} case(s): a case-level bootstrap over fewer than {cfg.min_cases} "
                   "cases is coarse; add validation cases for a verdict that means more")
    if "reference" in tables and cfg.decision == "non-inferiority":
        ref = _array(tables["reference"], labels, "dice").mean(1)
        lo, hi = _interval(w @ ref / n, cfg.confidence)
        if (hi - lo) / 2 > cfg.non_inferiority_margin:
            need = int(np.ceil(n * ((hi - lo) / 2 / cfg.non_inferiority_margin) ** 2))
            out.append(f"n={n} cases: the reference's own mean-Dice {cfg.confidence:.0%} CI is "
                       f"about +/-{(hi - lo) / 2:.3f}, wider than the margin "
                       f"{cfg.non_inferiority_margin}; about {need} cases would match it")
    for key, cases in tables.items():
        for name, c in empty_counts(cases).items():
            if c["both-empty"] or c["one-empty"]:
                out.append(_empty_warning(key, name, c, n))
    return out


def _empty_warning(key: str, label: str, counts: Mapping[str, int], n: int) -> str:
    vs = "candidate vs reference labels" if key == "agreement" else f"{key} vs ground truth"
    return (f"label '{label}', {vs}: empty in both masks in {counts['both-empty']} of {n} cases "
            f"(Dice 1, HD95 0, surface Dice 1), in one mask only in {counts['one-empty']} "
            "(Dice 0, surface Dice 0, HD95 = the grid's diagonal)")


def _json_ready(value: Any) -> Any:
    """Tuples to lists, numpy scalars to Python; a non-finite float (none is expected) to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value

