"""Helpers of the compression tests (synthetic arrays, accuracy)."""

from __future__ import annotations

import numpy as np


def synthetic_arrays(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Balanced synthetic CT slices (lesion / no lesion), windowed to [0, 1], (N, 1, size, size)."""
    from edgemed.data.synthetic import make_slice

    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    x = np.stack([make_slice(rng, size, bool(v)) for v in y])
    x = np.clip((x + 160.0) / 400.0, 0.0, 1.0).astype(np.float32)[:, None]
    return x, y


def accuracy(model, xy) -> float:
    from edgemed._torch import predict_logits

    return float((predict_logits(model, xy[0]).argmax(1) == xy[1]).mean())
