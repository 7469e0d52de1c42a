"""Calibration samples from DICOM series: deterministic, streamed, bounded memory.

``count`` samples are drawn from the series of a folder with a fixed seed. A whole-volume model
takes one preprocessed volume per chosen series; a sliding-window model takes ROI crops at
seeded positions, spread over the chosen series. Only the chosen series are read, one at a
time, so peak memory is the samples plus one volume, whatever the number of series.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgemed_runtime import IOSpec

from ..calibration import CalibrationSet
from .data import index_series, iter_volumes


def _roi_crops(arr: np.ndarray, roi: tuple[int, ...], k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``k`` ROI crops of (C, *spatial) ``arr`` at seeded positions (zero-padded when smaller)."""
    spatial = arr.shape[1:]
    pad = [(0, 0)] + [(0, max(0, r - s)) for r, s in zip(roi, spatial)]
    if any(p[1] for p in pad):
        arr = np.pad(arr, pad)
        spatial = arr.shape[1:]
    out = []
    for _ in range(k):
        start = [int(rng.integers(0, s - r + 1)) for s, r in zip(spatial, roi)]
        sl = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(start, roi))
        out.append(np.ascontiguousarray(arr[sl], dtype=np.float32))
    return out


def sample_volume_calibration(source: str | os.PathLike[str], io: IOSpec, spec: Any, *,
                              inference: Any = None, count: int = 64, seed: int = 0) -> CalibrationSet:
    """``count`` calibration samples (N, C, *roi or model input) from a folder of series.

    Raises:
        InvalidInputError / CalibrationError: as ``iter_volumes`` / ``load_volume_arrays``.
    """
    from ..errors import CalibrationError

    items = index_series(source)
    rng = np.random.default_rng(seed)
    sliding = inference is not None and inference.mode == "sliding_window"
    n_series = min(len(items), count)
    chosen = sorted(rng.choice(len(items), size=n_series, replace=False).tolist())
    per = np.full(n_series, count // n_series if sliding else 1)
    if sliding:
        per[: count - int(per.sum())] += 1
    x = np.empty((int(per.sum()), *io.sample_shape), dtype=np.float32)
    n = 0
    for k, (item, arr, _, _) in zip(per, iter_volumes([items[i] for i in chosen], spec)):
        samples = _roi_crops(arr, tuple(inference.roi_size), int(k), rng) if sliding else [arr]
        for s in samples:
            if s.shape != io.sample_shape:
                raise CalibrationError(
                    f"calibration series {item.name!r} preprocesses to another shape than the "
                    "model's input", expected="x".join(map(str, io.sample_shape)),
                    found="x".join(map(str, s.shape)), code="shape",
                    fix="set size= in the VolumeSpec, or an inference spec with roi_size",
                )
            x[n] = s
            n += 1
    return CalibrationSet(x, seed, str(source), len(items))
