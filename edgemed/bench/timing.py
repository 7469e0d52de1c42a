"""Interleaved timing: run candidates A B A B ... so their ratios hold on a noisy, shared machine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency figures of one candidate, in milliseconds."""

    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float

    @classmethod
    def from_samples(cls, seconds: list[float] | np.ndarray) -> "LatencyStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(runs=int(len(ms)), p50=float(np.median(ms)), p90=float(np.percentile(ms, 90)),
                   p99=float(np.percentile(ms, 99)), mean=float(ms.mean()), std=float(ms.std()),
                   min=float(ms.min()))

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def interleaved_latency(
    candidates: Mapping[str, Callable[[], object]],
    *,
    runs: int = 30,
    warmup: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time each zero-argument callable ``runs`` times, interleaved, after ``warmup`` calls each.

    The order rotates every round (A B C, B C A, ...) so no candidate always runs first.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            candidates[name]()
            samples[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress(r + 1, runs)
    return {n: LatencyStats.from_samples(s) for n, s in samples.items()}
