"""Compare a benchmark result with a saved baseline and flag regressions beyond a threshold.

Reads either format: pytest-benchmark JSON (``--benchmark-json``; median per test) or an
``edgemed bench --save`` result (per candidate: the ratio to ORT FP32 measured in the same run,
which survives a noisy machine better than milliseconds, and the p50). A figure regresses when it
grew by more than ``threshold`` (a fraction: 0.10 = 10%).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Change:
    """One figure in both results."""

    name: str
    metric: str
    baseline: float
    current: float

    @property
    def change(self) -> float:
        return self.current / self.baseline - 1.0 if self.baseline else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "baseline": self.baseline,
                "current": self.current, "change_pct": round(100 * self.change, 2)}


def _load(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError("cannot read the benchmark JSON", found=f"{p}: {type(exc).__name__}",
                                expected="pytest-benchmark JSON or an `edgemed bench --save` result",
                                code="not-a-result") from None
    if not isinstance(d, dict) or not (d.get("kind") == "edgemed-bench" or "benchmarks" in d):
        raise InvalidInputError("not a benchmark result", found=str(p),
                                expected="pytest-benchmark JSON or an `edgemed bench --save` result",
                                code="not-a-result")
    return d


def figures(d: dict[str, Any]) -> dict[tuple[str, str], float]:
    """``{(name, metric): value}`` where bigger is worse."""
    out: dict[tuple[str, str], float] = {}
    if d.get("kind") == "edgemed-bench":
        for row in d.get("ratio_table", []):
            if "vs_fp32" in row:
                out[(row["name"], "ratio_to_fp32")] = float(row["vs_fp32"])
            out[(row["name"], "p50_ms")] = float(row["p50_ms"])
        return out
    for b in d.get("benchmarks", []):
        out[(b.get("fullname") or b["name"], "median_s")] = float(b["stats"]["median"])
    return out


def compare(baseline: str | os.PathLike[str], current: str | os.PathLike[str], *,
            threshold: float = 0.10, metrics: tuple[str, ...] | None = None
            ) -> tuple[list[Change], list[Change]]:
    """Return (every shared figure, the regressions beyond ``threshold``).

    ``metrics`` limits the comparison (e.g. ``("ratio_to_fp32",)``; default: all).
    """
    a, b = figures(_load(baseline)), figures(_load(current))
    shared = [Change(n, m, a[(n, m)], b[(n, m)]) for (n, m) in sorted(set(a) & set(b))
              if metrics is None or m in metrics]
    return shared, [c for c in shared if c.change > threshold]


def main(argv: list[str] | None = None) -> int:
    """``python -m edgemed.bench.compare BASELINE CURRENT [--threshold 10] [--metric M]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline")
    ap.add_argument("current")
    ap.add_argument("--threshold", type=float, default=10.0, help="percent (default 10)")
    ap.add_argument("--metric", action="append", help="only this metric (repeat)")
    args = ap.parse_args(argv)
    try:
        shared, bad = compare(args.baseline, args.current, threshold=args.threshold / 100,
                              metrics=tuple(args.metric) if args.metric else None)
    except InvalidInputError as exc:
        print(f"error: {exc}")
        return 2
    for c in shared:
        flag = "REGRESSION" if c in bad else "ok"
        print(f"{flag:10} {c.name} {c.metric}: {c.baseline:.4g} -> {c.current:.4g} "
              f"({100 * c.change:+.1f}%)")
    print(f"{len(bad)} regression(s) beyond {args.threshold:g}% in {len(shared)} figure(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
