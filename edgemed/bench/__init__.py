"""Benchmarking: fresh-process interleaved timing, peers, machine ceilings, MACs, reports.

``bench(source, ...)`` is the API behind ``edgemed bench``; ``build_report`` behind
``edgemed report``. Heavy modules load on first use.
"""

from __future__ import annotations

from typing import Any

from .timing import LatencyStats, interleaved_latency, interleaved_samples, ratio

_LAZY = {
    "bench": "api", "BenchResult": "api", "BenchConfig": "runner", "build_report": "report",
    "count_macs": "macs", "get_ceilings": "ceiling", "machine_info": "machine",
    "compare": "compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["LatencyStats", "interleaved_latency", "interleaved_samples", "ratio", *_LAZY]
