"""The latency, size and agreement bars of issues 2 and 5, measured with ``edgemed.bench`` (fresh
processes, candidates interleaved in rotating turns, ratios per process then their median).

Issue 2 (the spine), MONAI ResNet-18 / DenseNet-121, 1x224x224, batch 1, 2 threads:
  the cpu-x86 onnxruntime INT8 artifact <= 0.35x / 0.60x ORT FP32 in the same run; size <= 0.27x;
  top-1 agreement with FP32 >= 0.99 on the synthetic validation set.
Issue 5 (targets): the artifact chosen for cpu-x86 <= 1.0x the best peer (ORT quantize_static
  defaults; NNCF + OpenVINO defaults) and <= 0.32x (DenseNet-121) / 0.28x (ResNet-18) ORT FP32;
  the mobile (ORT format) artifact <= 1.1x the ONNX INT8 artifact on this host.
Each run's JSON goes to ``.benchmarks/edgemed-bench/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from bench_common import MODELS, THREADS

SPINE_VS_FP32 = {"resnet18": 0.35, "densenet121": 0.60}
TARGETS_VS_FP32 = {"resnet18": 0.28, "densenet121": 0.32}
SIZE_MAX = 0.27
AGREEMENT_MIN = 0.99
MOBILE_VS_ONNX_INT8 = 1.1
RESULTS = Path(os.environ.get("EDGEMED_BENCH_RESULTS", ".benchmarks/edgemed-bench"))


@pytest.fixture(scope="session")
def bar_runs(artifacts: Any) -> Any:
    """One interleaved multi-process run per model: chosen cpu-x86 artifact, the ONNX INT8 one,
    the mobile one, and the peers (FP32, quantize_static, NNCF + OpenVINO)."""
    from edgemed.bench.api import bench
    from edgemed.bench.runner import BenchConfig

    done: dict[str, Any] = {}

    def get(model: str) -> Any:
        if model not in done:
            chosen = artifacts(model, "cpu-x86", "auto")
            compare: list[tuple[str, Path]] = [
                ("ort-int8", artifacts(model, "cpu-x86", "ort-int8-u8s8"))]
            try:
                compare.append(("mobile", artifacts(model, "mobile-android", "auto")))
            except pytest.skip.Exception:
                pass
            cfg = BenchConfig(threads=THREADS, runs=60, warmup=10, processes=5, cold_processes=1)
            res = bench(chosen, compare=compare, peers=True, config=cfg, check_samples=64)
            RESULTS.mkdir(parents=True, exist_ok=True)
            res.save(RESULTS / f"bars-{model}-{time.strftime('%Y%m%dT%H%M%S')}.json")
            done[model] = res
        return done[model]

    return get


def _ratio(res: Any, a: str, b: str) -> tuple[float, list[float]]:
    from edgemed.bench.runner import speed_ratios

    if a not in res.data["candidates"] or "latency_ms" not in res.data["candidates"][a]:
        pytest.skip(f"{a} was not timed: {res.data['candidates'].get(a, {}).get('error', 'absent')}")
    r = speed_ratios(res.data, a, b)
    assert r is not None, f"{b} was not timed"
    return r["median"], r["per_process"]


@pytest.mark.parametrize("model", list(MODELS))
def test_spine_ort_int8_vs_fp32(bar_runs, model: str) -> None:
    med, per = _ratio(bar_runs(model), "ort-int8", "ort-fp32")
    assert med <= SPINE_VS_FP32[model], f"{model}: ORT INT8 {med:.3f}x FP32 {per}"


@pytest.mark.parametrize("model", list(MODELS))
def test_spine_size(bar_runs, model: str) -> None:
    c = bar_runs(model).data["candidates"]
    ratio = c["ort-int8"]["size_bytes"] / c["ort-fp32"]["size_bytes"]
    assert ratio <= SIZE_MAX, f"{model}: INT8 size {ratio:.4f}x FP32"


@pytest.mark.parametrize("model", list(MODELS))
def test_agreement_with_fp32(bar_runs, model: str) -> None:
    c = bar_runs(model).data["candidates"]
    for name in ("edgemed", "ort-int8", "mobile"):
        if name in c and "agreement_with_baseline" in c[name]:
            a = c[name]["agreement_with_baseline"]["top1_agreement"]
            assert a >= AGREEMENT_MIN, f"{model} {name}: top-1 agreement {a:.3f}"


@pytest.mark.parametrize("model", list(MODELS))
def test_cpu_x86_vs_best_peer(bar_runs, model: str) -> None:
    res = bar_runs(model)
    c = res.data["candidates"]
    peers = [n for n in ("ort-quantize_static", "nncf+openvino") if "latency_ms" in c.get(n, {})]
    assert peers, res.data["skipped"]
    worst = max(_ratio(res, "edgemed", p)[0] for p in peers)
    best = min(peers, key=lambda p: c[p]["latency_ms"]["p50"])
    assert worst <= 1.0, f"{model}: cpu-x86 artifact {_ratio(res, 'edgemed', best)[0]:.3f}x {best}"


@pytest.mark.parametrize("model", list(MODELS))
def test_cpu_x86_vs_fp32(bar_runs, model: str) -> None:
    med, per = _ratio(bar_runs(model), "edgemed", "ort-fp32")
    assert med <= TARGETS_VS_FP32[model], f"{model}: cpu-x86 artifact {med:.3f}x FP32 {per}"


@pytest.mark.parametrize("model", list(MODELS))
def test_mobile_vs_onnx_int8(bar_runs, model: str) -> None:
    res = bar_runs(model)
    if "mobile" not in res.data["candidates"]:
        pytest.skip("no mobile-android artifact could be built here")
    med, per = _ratio(res, "mobile", "ort-int8")
    assert med <= MOBILE_VS_ONNX_INT8, f"{model}: mobile {med:.3f}x ONNX INT8 {per}"
