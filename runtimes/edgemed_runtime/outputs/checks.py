"""Checks shared by the SEG and NIfTI writers: a label volume or per-label probabilities on a
``Volume``'s grid. numpy only; the errors name shapes and counts, never DICOM values."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..volume import Volume

MAX_LABEL = 65535  # labels are stored as uint8 / uint16


def check_grid(shape: tuple[int, ...], source: Volume, what: str) -> None:
    """Raise ``mask-grid`` unless ``shape`` is the (z, y, x) grid of ``source``."""
    if tuple(shape) != source.shape:
        raise InvalidInputError(
            f"the {what} is not on the source volume's grid", code="mask-grid",
            expected=f"(z, y, x) = {source.shape}", found=str(tuple(shape)),
            fix="resample the result back to the source grid before writing it")


def label_array(labels: np.ndarray, source: Volume, *, count: int | None = None) -> np.ndarray:
    """``labels`` as a (z, y, x) uint8 (max <= 255) or uint16 array on ``source``'s grid.

    ``count`` (K) bounds the values to 0..K when given.

    Raises:
        InvalidInputError: ``mask-grid`` (not 3D on the grid), ``bad-labels`` (not integers,
            negative, beyond K or beyond 65535).
    """
    arr = np.asarray(labels)
    check_grid(arr.shape, source, "label volume")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError("labels must be integers", code="bad-labels",
                                expected="an unsigned integer (z, y, x) array", found=str(arr.dtype),
                                fix="pass argmax labels; probabilities go in probabilities=")
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    limit = MAX_LABEL if count is None else count
    if low < 0 or high > limit:
        raise InvalidInputError("the label volume has values outside the label list",
                                code="bad-labels", expected=f"values in 0..{limit}",
                                found=f"values in {low}..{high}",
                                fix="give one name per label 1..K, or remap the labels")
    return arr.astype(np.uint8 if high <= 255 else np.uint16, copy=False)


def probability_array(probabilities: np.ndarray, source: Volume, count: int) -> np.ndarray:
    """``probabilities`` (K, z, y, x) in [0, 1] as float32, clipped to [0, 1].

    Raises:
        InvalidInputError: ``bad-probabilities`` (wrong channel count, not floats, not finite,
            outside [0, 1]) or ``mask-grid`` (spatial shape is not the volume's).
    """
    arr = np.asarray(probabilities)
    if arr.ndim != 4 or arr.shape[0] != count:
        raise InvalidInputError("probabilities need one channel per label", code="bad-probabilities",
                                expected=f"(K={count}, z, y, x)", found=str(arr.shape))
    check_grid(arr.shape[1:], source, "probability map")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError("probabilities must be floats", code="bad-probabilities",
                                expected="float values in [0, 1]", found=str(arr.dtype))
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InvalidInputError("probabilities contain NaN or infinity", code="bad-probabilities",
                                expected="finite values in [0, 1]", found="non-finite values")
    low, high = float(arr.min()), float(arr.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InvalidInputError("probabilities are outside [0, 1]", code="bad-probabilities",
                                expected="values in [0, 1] (softmax or sigmoid outputs)",
                                found=f"values in {low:.3g}..{high:.3g}")
    return np.clip(arr, 0.0, 1.0)
