"""Interleaved timing: run candidates in rotating turns so their ratios hold on a noisy machine.

``interleaved_samples`` returns the raw per-call times (seconds) of every candidate, taken in
rotating order round after round; ``interleaved_latency`` summarises them (p50/p90/p99/mean/std).
``ratio`` compares two candidates' samples from the same run: the ratio of medians, the median of
per-round paired ratios, and a bootstrap confidence interval.
"""

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


def interleaved_samples(
    candidates: Mapping[str, Callable[[], object]],
    *,
    runs: int = 30,
    warmup: int = 3,
    block: int = 1,
    settle: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Call each zero-argument callable ``runs`` times, interleaved, after ``warmup`` calls each.

    The order rotates every round (A B C, B C A, ...) so no candidate always runs first (or
    always right after the same neighbour). With ``block > 1`` each turn is ``settle`` untimed
    calls then ``block`` timed ones (A A A B B B ...): the candidate runs with its own weights in
    the caches and its own threads awake, as a device running one model does, while slow changes
    of the machine's load still reach every candidate alike. Returns per-call seconds.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    block = max(1, int(block))
    rounds = -(-runs // block)
    for r in range(rounds):
        k = r % len(names) if names else 0
        take = min(block, runs - r * block)
        for name in names[k:] + names[:k]:
            fn = candidates[name]
            for _ in range(settle):
                fn()
            out = samples[name]
            for _ in range(take):
                t0 = clock()
                fn()
                out.append(clock() - t0)
        if progress is not None:
            progress(min(runs, (r + 1) * block), runs)
    return {n: np.asarray(s, dtype=np.float64) for n, s in samples.items()}


def interleaved_latency(
    candidates: Mapping[str, Callable[[], object]],
    *,
    runs: int = 30,
    warmup: int = 3,
    block: int = 10,
    settle: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time each zero-argument callable ``runs`` times, in rotating turns, after ``warmup`` calls.

    Each turn is ``settle`` untimed then ``block`` timed calls of one candidate (A A A B B B ...,
    the order rotating every round). Strict A B A B (``block=1, settle=0``) evicts each model's
    weights from the cache between calls and squeezes every ratio towards 1 on this kind of CPU.
    """
    raw = interleaved_samples(candidates, runs=runs, warmup=warmup, block=block, settle=settle,
                              progress=progress)
    return {n: LatencyStats.from_samples(s) for n, s in raw.items()}


@dataclass(frozen=True)
class Ratio:
    """``a`` relative to ``b`` from samples of the same interleaved run."""

    of_medians: float
    paired_median: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def ratio(a: np.ndarray, b: np.ndarray, *, boot: int = 400, seed: int = 0) -> Ratio:
    """Median(a) / median(b), the median of round-by-round ratios, and a 95% bootstrap CI.

    Rounds are resampled together (a_i with b_i), which keeps the pairing the interleaving made.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(boot, n))
    boots = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Ratio(float(np.median(a) / np.median(b)), float(np.median(a / b)), float(lo), float(hi))
