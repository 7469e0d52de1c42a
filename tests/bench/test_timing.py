"""Interleaving order, sample counts and paired ratios (no wall-clock assertions)."""

from __future__ import annotations

import numpy as np

from edgemed.bench.timing import (
    LatencyStats,
    interleaved_latency,
    interleaved_samples,
    ratio,
)


def test_rounds_rotate_and_count() -> None:
    calls: list[str] = []
    cands = {n: (lambda n=n: calls.append(n)) for n in "ABC"}
    out = interleaved_samples(cands, runs=4, warmup=2)
    assert calls[:6] == list("ABCABC")  # warm-up: every candidate, in order
    assert calls[6:] == list("ABC" "BCA" "CAB" "ABC")  # rotated rounds
    assert {n: len(s) for n, s in out.items()} == {"A": 4, "B": 4, "C": 4}
    assert all((s >= 0).all() for s in out.values())


def test_interleaved_latency_keeps_its_api() -> None:
    stats = interleaved_latency({"a": lambda: None, "b": lambda: None}, runs=5, warmup=0)
    assert set(stats) == {"a", "b"} and stats["a"].runs == 5
    assert stats["a"].p50 <= stats["a"].p99


def test_latency_stats_from_samples() -> None:
    s = LatencyStats.from_samples(np.array([0.001, 0.002, 0.003]))
    assert (s.p50, s.min, s.runs) == (2.0, 1.0, 3)
    assert set(s.to_dict()) == {"runs", "p50", "p90", "p99", "mean", "std", "min"}


def test_ratio_of_paired_samples() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.009, 0.011, 200)
    a = 0.5 * b * rng.uniform(0.98, 1.02, 200)
    r = ratio(a, b)
    assert abs(r.paired_median - 0.5) < 0.01
    assert r.ci_low <= r.of_medians <= r.ci_high
    assert 0.45 < r.ci_low and r.ci_high < 0.55


def test_turns_of_several_calls_with_settling_calls() -> None:
    calls: list[str] = []
    out = interleaved_samples({n: (lambda n=n: calls.append(n)) for n in "AB"}, runs=5, warmup=0,
                              block=2, settle=1)
    # rounds of (1 untimed + 2 timed) per candidate, rotating; the last round takes what is left
    assert "".join(calls) == "AAA" "BBB" "BBB" "AAA" "AA" "BB"
    assert {n: len(s) for n, s in out.items()} == {"A": 5, "B": 5}
