"""Sliding-window inference in numpy, with the semantics of MONAI's ``sliding_window_inference``.

The same padding of an input smaller than the window (then cropped back), scan intervals, window
order, importance map (constant or gaussian, computed in float32 as MONAI does), weighted
accumulation and normalisation; windows go through ``predictor`` ``sw_batch_size`` at a time.
Memory: the float32 output accumulator, the count map and one batch of windows.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from .spec import InferenceSpec

Predictor = Callable[[np.ndarray], Any]
_NP_PAD = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def pad_widths(image_size: Sequence[int], roi_size: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis so that every axis is at least the ROI:
    ``diff // 2`` before and the rest after, as MONAI does."""
    out = []
    for size, roi in zip(image_size, roi_size):
        diff = max(roi - size, 0)
        out.append((diff // 2, diff - diff // 2))
    return out


def scan_intervals(image_size: Sequence[int], roi_size: Sequence[int],
                   overlap: float) -> tuple[int, ...]:
    """MONAI ``_get_scan_interval``: ``int(roi * (1 - overlap))`` (at least 1), or the ROI where
    the (padded) image is exactly the ROI."""
    out = []
    for size, roi in zip(image_size, roi_size):
        if roi == size:
            out.append(int(roi))
        else:
            interval = int(roi * (1 - overlap))
            out.append(interval if interval > 0 else 1)
    return tuple(out)


def window_starts(image_size: Sequence[int], roi_size: Sequence[int],
                  intervals: Sequence[int]) -> list[tuple[int, ...]]:
    """MONAI ``dense_patch_slices``: the start corner of every window, first axis slowest; the
    last window of an axis is moved back to end at the image border. ``image_size >= roi_size``."""
    per_axis = []
    for size, roi, step in zip(image_size, roi_size, intervals):
        n = max(0, -(-(size - roi) // step)) + 1  # first d with d * step + roi >= size, plus 1
        starts = []
        for idx in range(n):
            start = idx * step
            starts.append(start - max(start + roi - size, 0))
        per_axis.append(starts)
    return list(itertools.product(*per_axis))


def importance_map(roi_size: Sequence[int], blend: str, sigma_scale: float) -> np.ndarray:
    """MONAI ``compute_importance_map`` in float32: ones, or the outer product of 1D gaussians
    ``exp(x^2 / (-2 sigma^2))`` on ``x = -(n-1)/2 .. (n-1)/2``, ``sigma = sigma_scale * n``;
    then clamped below at ``max(min, 1e-3)``. The exponential is evaluated in float64 and
    rounded, so it is within one float32 ulp of torch's (whose SIMD expf is not correctly
    rounded); every other step rounds as torch does."""
    roi = tuple(int(s) for s in roi_size)
    if blend == "constant":
        weights = np.ones(roi, dtype=np.float32)
    else:
        weights = np.ones((), dtype=np.float32)
        for n in roi:
            x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)[:n]
            sigma = n * sigma_scale
            arg = np.square(x) / np.float32(-2 * sigma**2)  # float32, as torch computes it
            g = np.exp(arg.astype(np.float64)).astype(np.float32)  # within 1 ulp of torch.exp
            weights = weights[..., None] * g if weights.ndim else g
    floor = np.float32(max(float(weights.min()), 1e-3))
    return np.maximum(weights, floor)


def _check_input(inputs: Any, spec: InferenceSpec) -> np.ndarray:
    """The input as float32 ``(N, C, *spatial)`` with the ROI's spatial rank, finite.

    Raises:
        InvalidInputError: not a real array (``shape``), the wrong rank (``shape``), empty
            (``shape``), NaN/Inf (``non-finite``).
    """
    if not isinstance(inputs, np.ndarray) or inputs.dtype.kind not in "biuf":
        raise InvalidInputError(
            "sliding-window input must be a real numpy array", expected="a float32 ndarray",
            found=type(inputs).__name__ if not isinstance(inputs, np.ndarray) else str(inputs.dtype),
            code="shape")
    rank = 2 + len(spec.roi_size)
    if inputs.ndim != rank or 0 in inputs.shape:
        raise InvalidInputError(
            "sliding-window input has the wrong rank for the ROI",
            expected=f"(batch, channels) + {len(spec.roi_size)} spatial axes, none empty",
            found="x".join(map(str, inputs.shape)), code="shape",
            fix="add the batch and channel axes: x[None, None] for one single-channel volume")
    x = np.asarray(inputs, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InvalidInputError("sliding-window input contains NaN or Inf",
                                expected="finite values", found="non-finite voxels",
                                code="non-finite")
    return x


def _pad(x: np.ndarray, pads: list[tuple[int, int]], spec: InferenceSpec) -> np.ndarray:
    """Pad the spatial axes as ``torch.nn.functional.pad`` with ``spec.padding_mode``.

    Raises:
        InvalidInputError (``shape``): reflect padding as large as the axis (torch refuses it).
    """
    if not any(b or a for b, a in pads):
        return x
    if spec.padding_mode == "reflect":
        for axis, ((before, after), size) in enumerate(zip(pads, x.shape[2:])):
            if max(before, after) >= size:
                raise InvalidInputError(
                    "reflect padding must be smaller than the axis it pads",
                    expected=f"spatial axis {axis} longer than {max(before, after)}",
                    found=f"size {size}", code="shape",
                    fix='use padding_mode "constant" or "replicate" for inputs this small')
    widths = [(0, 0), (0, 0), *pads]
    if spec.padding_mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.float32(spec.cval))
    return np.pad(x, widths, mode=_NP_PAD[spec.padding_mode])


def _window_output(result: Any, n: int, roi: tuple[int, ...]) -> np.ndarray:
    """The predictor's output for ``n`` windows as float32 ``(n, C_out, *roi)``.

    Raises:
        InvalidInputError (``window-output``): not an array, a classification output
            ``(n, classes)``, or a spatial size other than the ROI's.
    """
    try:
        out = np.asarray(result, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError(
            "the predictor did not return an array", expected="a float ndarray (B, C, *roi)",
            found=type(result).__name__, code="window-output") from None
    if out.ndim == 2:
        raise InvalidInputError(
            "the model returns one vector per window (classification); sliding-window "
            "inference needs an output with the window's spatial size",
            expected=f"({n}, C, {', '.join(map(str, roi))})", found=str(out.shape),
            code="window-output", fix='use mode "whole" for a classification model')
    if out.ndim != 2 + len(roi) or out.shape[0] != n or tuple(out.shape[2:]) != roi:
        raise InvalidInputError(
            "the predictor's output does not match the windows it was given",
            expected=f"({n}, C, {', '.join(map(str, roi))})", found=str(out.shape),
            code="window-output",
            fix="the model's output must have the batch and spatial size of its input window")
    return out


def _accumulate(x: np.ndarray, predictor: Predictor, spec: InferenceSpec,
                starts: list[tuple[int, ...]], weights: np.ndarray) -> np.ndarray:
    """Run every window of every batch item through ``predictor`` and add ``output * weights``
    into a float32 accumulator the size of ``x`` (MONAI's window order); return it."""
    roi = spec.roi_size
    num_win = len(starts)
    total = num_win * x.shape[0]
    acc: np.ndarray | None = None
    for first in range(0, total, spec.sw_batch_size):
        idxs = range(first, min(first + spec.sw_batch_size, total))
        slices = [(i // num_win, tuple(slice(s, s + r) for s, r in zip(starts[i % num_win], roi)))
                  for i in idxs]
        batch = np.stack([x[(b, slice(None), *sl)] for b, sl in slices])
        out = _window_output(predictor(batch), len(slices), roi)
        if acc is None:
            acc = np.zeros((x.shape[0], out.shape[1], *x.shape[2:]), dtype=np.float32)
        elif out.shape[1] != acc.shape[1]:
            raise InvalidInputError(
                "the predictor returned a different channel count for another window",
                expected=f"{acc.shape[1]} channels", found=f"{out.shape[1]}",
                code="window-output")
        weighted = out * weights  # a new array: the predictor's may be read-only or reused
        for (b, sl), piece in zip(slices, weighted):
            acc[(b, slice(None), *sl)] += piece
    assert acc is not None  # at least one window exists
    return acc


def _count_map(image_size: tuple[int, ...], roi: tuple[int, ...],
               starts: list[tuple[int, ...]], weights: np.ndarray) -> np.ndarray:
    """Sum of the window weights over the image, ``(1, 1, *image_size)`` float32."""
    count = np.zeros((1, 1, *image_size), dtype=np.float32)
    for start in starts:
        count[(0, 0, *(slice(s, s + r) for s, r in zip(start, roi)))] += weights
    return count


def sliding_window(inputs: np.ndarray, predictor: Predictor, spec: InferenceSpec) -> np.ndarray:
    """Run ``predictor`` over ``inputs`` as ``spec`` says.

    Args:
        inputs: ``(N, C, *spatial)`` (N is usually 1), 2 or 3 spatial axes; cast to float32.
        predictor: takes a float32 batch ``(B, C, *roi)``, returns ``(B, C_out, *roi)``.
        spec: ``mode="whole"`` calls ``predictor(inputs)`` once and returns its output as is;
            ``"sliding_window"`` runs MONAI ``sliding_window_inference`` semantics.

    Returns:
        ``(N, C_out, *spatial)`` float32: the blended window outputs on the input's grid.

    Raises:
        InvalidInputError: wrong rank / non-real / non-finite input (``shape``, ``non-finite``),
            reflect padding too large (``shape``), a predictor output that is not one spatial
            map per window, e.g. a classification model (``window-output``).
    """
    if not isinstance(spec, InferenceSpec):
        raise InvalidInputError("spec must be an InferenceSpec", expected="InferenceSpec",
                                found=type(spec).__name__, code="bad-inference-spec")
    if spec.mode == "whole":
        return np.asarray(predictor(inputs))
    x = _check_input(inputs, spec)
    roi = spec.roi_size
    original = tuple(x.shape[2:])
    pads = pad_widths(original, roi)
    x = _pad(x, pads, spec)
    image_size = tuple(x.shape[2:])
    starts = window_starts(image_size, roi, scan_intervals(image_size, roi, spec.overlap))
    weights = importance_map(roi, spec.blend, spec.sigma_scale)
    acc = _accumulate(x, predictor, spec, starts, weights)
    acc /= _count_map(image_size, roi, starts, weights)
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, original))
    if any(b or a for b, a in pads):
        return np.ascontiguousarray(acc[(slice(None), slice(None), *crop)])
    return acc


def window_count(image_size: Sequence[int], spec: InferenceSpec) -> int:
    """How many windows ``sliding_window`` runs per batch item for an input of ``image_size``
    (1 for ``mode="whole"``)."""
    if spec.mode == "whole":
        return 1
    roi = spec.roi_size
    padded = [max(int(s), r) for s, r in zip(image_size, roi)]
    return len(window_starts(padded, roi, scan_intervals(padded, roi, spec.overlap)))
