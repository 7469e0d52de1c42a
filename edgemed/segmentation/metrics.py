"""Per-case, per-label segmentation metrics: Dice, HD95 in millimetres, surface Dice.

One pinned implementation, MONAI's (``monai.metrics.compute_dice``,
``compute_hausdorff_distance(percentile=95, spacing=...)``, ``compute_surface_dice``): HD results
differ by more than 100 mm across tools (arXiv 2410.02630), so the version and the settings used
are recorded (``metric_settings``) beside every result.

Empty masks have a defined result instead of MONAI's NaN / inf and its warning:

- ``both-empty`` (the label is in neither mask): Dice 1, HD95 0 mm, surface Dice 1;
- ``one-empty`` (in exactly one): Dice 0, surface Dice 0, HD95 = the grid's diagonal in mm
  (the largest distance between two voxel centres of that grid: the worst possible).

MONAI is called only where both masks hold the label, so it never warns. Each label's masks
are cropped to their union's bounding box plus a one-voxel margin first (the crop MONAI itself
makes before finding edges): the values do not change, the one-hot tensors get small.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import InvalidInputError

METRICS = ("dice", "hd95_mm", "surface_dice")
"""The metrics ``case_metrics`` reports per label (HD95 lower is better; the others higher)."""

EMPTY_RULES: dict[str, dict[str, str]] = {
    "both-empty": {"dice": "1", "hd95_mm": "0", "surface_dice": "1"},
    "one-empty": {"dice": "0", "hd95_mm": "the grid's diagonal in mm (worst possible)",
                  "surface_dice": "0"},
}

_MARGIN = 1  # voxels of margin around the union bounding box (MONAI crops with 1 too)


def metric_settings(tolerance_mm: float = 2.0) -> dict[str, Any]:
    """The implementation, its version and every setting the metrics use (JSON-ready)."""
    import monai

    return {
        "implementation": "monai.metrics", "monai_version": str(monai.__version__),
        "dice": "compute_dice(include_background=True) on each label's binary mask",
        "hd95_mm": ("compute_hausdorff_distance(percentile=95, distance_metric='euclidean', "
                    "directed=False, spacing=(z, y, x) mm)"),
        "surface_dice": (f"compute_surface_dice(class_thresholds=[{tolerance_mm}], "
                         "distance_metric='euclidean', use_subvoxels=False, spacing=(z, y, x) mm)"),
        "tolerance_mm": float(tolerance_mm),
        "crop": f"union bounding box + {_MARGIN} voxel per label (values unchanged)",
        "empty_masks": EMPTY_RULES,
    }


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """``spacing`` as a tuple of ``ndim`` positive finite floats (mm, array axis order).

    Raises:
        InvalidInputError (``bad-spacing``): wrong length, not numbers, or not positive.
    """
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InvalidInputError(
            "voxel spacing is not usable", expected=f"{ndim} positive numbers (mm, array order)",
            found=_short(spacing), code="bad-spacing",
            fix="pass the volume's spacing, e.g. (z, y, x) = (2.0, 0.8, 0.8)")
    return sp


def check_mask(mask: Any, n_labels: int, *, what: str) -> np.ndarray:
    """``mask`` as an int64 array of 2 or 3 dims holding only 0..``n_labels``.

    Raises:
        InvalidInputError: ``shape`` when not a 2D/3D array; ``bad-labels`` when it holds
        non-integer values or labels beyond the label list.
    """
    a = np.asarray(mask)
    if a.ndim not in (2, 3) or a.size == 0:
        raise InvalidInputError(f"the {what} mask is not a 2D or 3D label array",
                                expected="an array (z, y, x) or (y, x) of integer labels",
                                found=f"shape {a.shape}", code="shape")
    if a.dtype == bool:
        a = a.astype(np.int64)
    elif not np.issubdtype(a.dtype, np.integer):
        with np.errstate(invalid="ignore"):
            integral = np.issubdtype(a.dtype, np.number) and bool(np.all(a == np.round(a)))
        if not integral:
            raise InvalidInputError(f"the {what} mask does not hold integer labels",
                                    expected="integer labels 0..K", found=f"dtype {a.dtype}",
                                    code="bad-labels")
    a = a.astype(np.int64, copy=False)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > n_labels:
        bad = np.unique(a[(a < 0) | (a > n_labels)])
        raise InvalidInputError(
            f"the {what} mask holds labels that are not in the label list",
            expected=f"0 (background) .. {n_labels}", found=f"values {_short(bad.tolist())}",
            fix="pass every label's name in `labels` (in order 1..K), or remap the mask",
            code="bad-labels")
    return a


def grid_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance between two voxel centres of a grid, in mm."""
    return float(np.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing))))


def case_metrics(pred: np.ndarray, truth: np.ndarray, *, labels: tuple[str, ...],
                 spacing: Sequence[float], tolerance_mm: float = 2.0
                 ) -> dict[str, dict[str, Any]]:
    """Dice, HD95 (mm) and surface Dice of one case, per label.

    Args:
        pred / truth: integer label arrays on the same grid, (z, y, x) (or (y, x)); 0 is
            background, 1..K the labels named by ``labels``.
        spacing: voxel size in mm, in array axis order.
        tolerance_mm: surface Dice's tolerance.
    Returns:
        {label name: {"dice", "hd95_mm", "surface_dice", "empty", "empty_in"}}: floats, then
        ``"both-empty"`` / ``"one-empty"`` / None and which mask lacks the label
        (``"both"``, ``"prediction"``, ``"truth"``, None).
    Raises:
        InvalidInputError: ``mask-grid`` (grids differ), ``bad-labels``, ``bad-spacing``,
        ``bad-option`` (tolerance not positive).
    """
    labels = check_label_names(labels)
    p = check_mask(pred, len(labels), what="predicted")
    t = check_mask(truth, len(labels), what="ground-truth")
    if p.shape != t.shape:
        raise InvalidInputError("the predicted and ground-truth masks are on different grids",
                                expected=f"shape {t.shape} (the ground truth's)",
                                found=f"shape {p.shape}", fix="resample the prediction onto the "
                                "ground truth's grid", code="mask-grid")
    sp = check_spacing(spacing, p.ndim)
    if not (np.isfinite(tolerance_mm) and tolerance_mm > 0):
        raise InvalidInputError("surface Dice tolerance must be positive", expected="> 0 mm",
                                found=str(tolerance_mm), code="bad-option")
    with one_torch_thread():
        return {name: label_metrics(p == k, t == k, spacing=sp, tolerance_mm=float(tolerance_mm))
                for k, name in enumerate(labels, start=1)}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside, then restore the previous count.

    MONAI's edge and distance steps are many small reductions: on a shared 2-core machine the
    default thread pool made 20 cases of 64x96x96 take 37 s instead of 7 s (same values).
    """
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def label_metrics(pred: np.ndarray, truth: np.ndarray, *, spacing: tuple[float, ...],
                  tolerance_mm: float) -> dict[str, Any]:
    """The metrics of one label's binary masks (same grid, checked), empty rules applied."""
    has_p, has_t = bool(pred.any()), bool(truth.any())
    if not has_p and not has_t:
        return {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0, "empty": "both-empty",
                "empty_in": "both"}
    if not (has_p and has_t):
        return {"dice": 0.0, "hd95_mm": grid_diagonal_mm(pred.shape, spacing),
                "surface_dice": 0.0, "empty": "one-empty",
                "empty_in": "truth" if has_p else "prediction"}
    window = _union_box(pred | truth)
    dice, hd95, sd = _monai(pred[window], truth[window], spacing=spacing,
                            tolerance_mm=tolerance_mm)
    return {"dice": dice, "hd95_mm": hd95, "surface_dice": sd, "empty": None, "empty_in": None}


def _monai(pred: np.ndarray, truth: np.ndarray, *, spacing: tuple[float, ...],
           tolerance_mm: float) -> tuple[float, float, float]:
    """(Dice, HD95 mm, surface Dice) of two non-empty binary masks, by MONAI."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    yp = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    yt = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))[None, None]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns that a deprecated argument it passes itself will go (FutureWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
        dice = compute_dice(yp, yt, include_background=True)
        hd = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95,
                                        spacing=list(spacing))
        sd = compute_surface_dice(yp, yt, [tolerance_mm], include_background=True,
                                  spacing=list(spacing))
    return float(dice[0, 0]), float(hd[0, 0]), float(sd[0, 0])


def _union_box(union: np.ndarray) -> tuple[slice, ...]:
    """Slices of the bounding box of ``union`` (non-empty) plus the margin, clipped."""
    out = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        out.append(slice(max(int(idx[0]) - _MARGIN, 0),
                         min(int(idx[-1]) + 1 + _MARGIN, union.shape[axis])))
    return tuple(out)


def check_label_names(labels: Sequence[str]) -> tuple[str, ...]:
    """``labels`` as a tuple of distinct non-empty names; ``bad-labels`` otherwise."""
    try:
        names = tuple(labels) if not isinstance(labels, str) else ()
    except TypeError:
        names = ()
    named = all(isinstance(n, str) and n for n in names)
    if not names or not named or len(set(names)) < len(names):
        raise InvalidInputError("the label names are not usable",
                                expected="a tuple of distinct, non-empty names of labels 1..K",
                                found=_short(labels), code="bad-labels")
    return names


def empty_counts(cases: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Per label, how many cases fell under each empty-mask rule (``case_metrics`` results)."""
    out: dict[str, dict[str, int]] = {}
    for case in cases:
        for name, m in case.items():
            c = out.setdefault(name, {"both-empty": 0, "one-empty": 0})
            if m["empty"]:
                c[m["empty"]] += 1
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
