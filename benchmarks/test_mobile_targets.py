"""Mobile targets on one model in one run: MONAI 2D DenseNet-121 (1x224x224, seeded random
weights) through the default INT8 variant of ``mobile-android`` (ORT format), 
``mobile-android-executorch`` (.pte, XNNPACK) and ``mobile-litert`` (.tflite), each chain taken
from its target profile. Bars per target: top-1 agreement with FP32 >= 0.99 on the synthetic
validation set (64 slices of edgemed.data.synthetic, a different seed from the 32 calibration
slices), artifact size <= 0.3x the FP32 ONNX. Latency: batch 1, 2 threads, the three artifacts
timed interleaved in this process (median of rounds), printed as a table and written to
``$EDGEMED_BENCH_OUT/mobile_targets.json`` when set. On x86 these are host numbers, not phone
numbers (every runtime here runs its x86 kernels)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_common import INPUT, MODELS, THREADS, top1_agreement
from conftest import weights_file

TARGETS = ("mobile-android", "mobile-android-executorch", "mobile-litert")
ROUNDS = 30
MIN_AGREEMENT = 0.99
MAX_SIZE = 0.3


def _chain(art: Any, specs: list[tuple[str, dict[str, Any]]], root: Path, ctx: Any) -> Any:
    from edgemed.passes.base import get_pass_class

    for i, (name, settings) in enumerate(specs):
        art = get_pass_class(name)(settings)(art, root / f"{i}-{name}", ctx)
    return art


@pytest.fixture(scope="module")
def built(data: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{"fp32": ONNX artifact, target: (INT8 artifact, build seconds)}`` for every target
    whose backend and passes are installed."""
    import torch

    from edgemed.model import load_model
    from edgemed.passes.base import BuildContext, get_pass_class
    from edgemed.targets import load_target
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.backends import backend_class
    from edgemed_runtime.iospec import IOSpec

    module = load_model(MODELS["densenet121"]).module
    module.load_state_dict(torch.load(weights_file("densenet121"), weights_only=True))
    module.eval()
    root = tmp_path_factory.mktemp("mobile")
    io = IOSpec(input_shape=INPUT, labels=("no_lesion", "lesion"))
    src = Artifact(path=root, format="torch", model_file="", io=io, payload=module)
    ctx = BuildContext(calibration=data.calib, seed=0, threads=THREADS)
    out: dict[str, Any] = {"fp32": _chain(src, [("export_onnx", {"opset": 17})], root / "fp32", ctx)}
    for target in TARGETS:
        prof = load_target(target)
        v = prof.variant(prof.default_variant)
        specs = v.pass_specs()
        if not backend_class(v.backend).is_available() or any(
                get_pass_class(n).missing() for n, _ in specs):
            continue
        t0 = time.perf_counter()
        art = _chain(src, specs, root / target, ctx)
        art = art.evolve(backend=v.backend, backend_options=prof.backend_options(v))
        out[target] = (art, time.perf_counter() - t0)
    return out


def _median_ms(sessions: dict[str, Any], x: np.ndarray) -> dict[str, float]:
    """Interleaved timing: each round runs every session once on the same input."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        s.run({"input": x})
    for _ in range(ROUNDS):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run({"input": x})
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def test_mobile_targets_table(built: dict[str, Any], data: Any) -> None:
    from edgemed_runtime.api import open_artifact

    targets = [t for t in TARGETS if t in built]
    missing = [t for t in TARGETS if t not in built]
    if not targets:
        pytest.skip("no mobile runtime installed")
    fp32 = built["fp32"]
    fp32_size = fp32.model_path.stat().st_size
    opts = {"threads": THREADS}
    sessions = {"fp32-onnx": open_artifact(fp32, options=opts)}
    for t in targets:
        # ORT Mobile: XNNPACK (the profile's first provider) is not in onnxruntime's x86 wheel
        sessions[t] = open_artifact(built[t][0], options=opts)
    x = data.check
    ref = np.concatenate([sessions["fp32-onnx"].run({"input": x[i:i + 1]})["logits"]
                          for i in range(len(x))])
    rows = []
    for t in targets:
        art, seconds = built[t]
        got = np.concatenate([sessions[t].run({"input": x[i:i + 1]})["logits"]
                              for i in range(len(x))])
        size = art.model_path.stat().st_size
        rows.append({"target": t, "format": art.format, "backend": art.backend,
                     "agreement": top1_agreement(ref, got), "bytes": size,
                     "size_vs_fp32": size / fp32_size, "build_s": round(seconds, 1),
                     "max_abs_logit_diff": float(np.abs(got - ref).max())})
    lat = _median_ms(sessions, x[:1])
    for r in rows:
        r["median_ms"] = round(lat[r["target"]], 2)
        r["vs_fp32_onnx"] = round(lat[r["target"]] / lat["fp32-onnx"], 2)
    for s in sessions.values():
        s.close()
    print(f"\nDenseNet-121 1x224x224, batch 1, {THREADS} threads, {ROUNDS} interleaved rounds; "
          f"FP32 ONNX {fp32_size / 1e6:.1f} MB, {lat['fp32-onnx']:.2f} ms")
    print(f"{'target':28s} {'format':7s} {'agree':>6s} {'size':>6s} {'ms':>8s} {'vs fp32':>8s}")
    for r in rows:
        print(f"{r['target']:28s} {r['format']:7s} {r['agreement']:6.3f} "
              f"{r['size_vs_fp32']:5.2f}x {r['median_ms']:8.2f} {r['vs_fp32_onnx']:7.2f}x")
    if missing:
        print(f"not installed here: {', '.join(missing)}")
    if os.environ.get("EDGEMED_BENCH_OUT"):
        out = Path(os.environ["EDGEMED_BENCH_OUT"]) / "mobile_targets.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"fp32_onnx_ms": lat["fp32-onnx"], "fp32_bytes": fp32_size,
                                   "rows": rows}, indent=1))
    bad = [r for r in rows if r["agreement"] < MIN_AGREEMENT or r["size_vs_fp32"] > MAX_SIZE]
    assert not bad, f"bars missed: {bad}"
