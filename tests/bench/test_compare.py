"""Regression flagging against a saved baseline (both result formats)."""

from __future__ import annotations

import json

import pytest

from edgemed.bench.compare import compare, main
from edgemed.errors import InvalidInputError


def _pytest_benchmark(path, medians):
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": [
        {"name": n, "fullname": f"benchmarks/test_x.py::{n}", "stats": {"median": m}}
        for n, m in medians.items()]}))
    return path


def _edgemed(path, rows):
    path.write_text(json.dumps({"kind": "edgemed-bench", "ratio_table": rows}))
    return path


def test_pytest_benchmark_regression_beyond_threshold(tmp_path) -> None:
    base = _pytest_benchmark(tmp_path / "a.json", {"t1": 0.010, "t2": 0.020})
    cur = _pytest_benchmark(tmp_path / "b.json", {"t1": 0.0105, "t2": 0.025})
    shared, bad = compare(base, cur, threshold=0.10)
    assert len(shared) == 2 and [c.name for c in bad] == ["benchmarks/test_x.py::t2"]
    assert main([str(base), str(cur), "--threshold", "10"]) == 1
    assert main([str(base), str(cur), "--threshold", "30"]) == 0


def test_edgemed_ratios(tmp_path) -> None:
    base = _edgemed(tmp_path / "a.json", [{"name": "edgemed", "p50_ms": 17.0, "vs_fp32": 0.55},
                                          {"name": "ort-fp32", "p50_ms": 31.0}])
    cur = _edgemed(tmp_path / "b.json", [{"name": "edgemed", "p50_ms": 25.0, "vs_fp32": 0.56},
                                         {"name": "ort-fp32", "p50_ms": 45.0}])
    _, bad = compare(base, cur, threshold=0.10, metrics=("ratio_to_fp32",))
    assert bad == []  # a slower machine, same ratio: no regression
    _, bad = compare(base, cur, threshold=0.10)
    assert {(c.name, c.metric) for c in bad} == {("edgemed", "p50_ms"), ("ort-fp32", "p50_ms")}


def test_bad_files(tmp_path) -> None:
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError):
        compare(tmp_path / "x.json", tmp_path / "x.json")
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "x.json")]) == 2
