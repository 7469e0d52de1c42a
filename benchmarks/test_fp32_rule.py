"""Issue 12's bar: the artifact ``cpu-x86`` chooses is never slower than its FP32 candidate.

For MONAI DenseNet-121 2D (1x224x224), ResNet-18 2D (1x224x224) and DenseNet-121 3D
(1x32x64x64), random seeded weights, built with ``edgemed.build`` for ``cpu-x86`` (automatic
selection on this host, seeded random calibration inputs, agreement gate), then the chosen
artifact and the FP32 reference timed side by side in one process (interleaved, 2 threads,
batch 1). The rule, not a number: chosen / FP32 <= 1.0, or the build shipped the FP32 baseline
itself (``fallback-fp32``). Which variant wins and the ratio differ by CPU; each run's figures
and the CPU flags go to ``.benchmarks/edgemed-bench/fp32-rule-*.json``.

    pytest benchmarks/test_fp32_rule.py -s
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RESULTS = Path(os.environ.get("EDGEMED_BENCH_RESULTS", ".benchmarks/edgemed-bench"))
CASES = {
    "densenet121-2d": ("monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2",
                       (1, 1, 224, 224)),
    "resnet18-2d": ("monai:resnet18 spatial_dims=2 n_input_channels=1 num_classes=2",
                    (1, 1, 224, 224)),
    "densenet121-3d": ("monai:DenseNet121 spatial_dims=3 in_channels=1 out_channels=2",
                       (1, 1, 32, 64, 64)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chosen_never_slower_than_fp32(case: str, tmp_path: Path) -> None:
    import torch

    import edgemed
    from edgemed.bench.machine import machine_info
    from edgemed.bench.timing import interleaved_latency
    from edgemed.model import load_model
    from edgemed_runtime.api import open_artifact
    from edgemed_runtime.artifact import Artifact

    spec, shape = CASES[case]
    torch.manual_seed(0)
    module = load_model(spec).module.eval()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, *shape[1:])).astype(np.float32)
    t0 = time.perf_counter()
    art = edgemed.build(module, torch.zeros(shape), calibration=calib, target="cpu-x86",
                        out=tmp_path / "art")
    build_s = time.perf_counter() - t0
    sel = art.provenance[-1]
    ref = Artifact.load(art.path / "reference")
    x = calib[:1]
    with open_artifact(art, options={"threads": 2}) as s, open_artifact(
            ref, options={"threads": 2}) as r:
        stats = interleaved_latency({"chosen": lambda: s.run({art.io.input_name: x}),
                                     "fp32": lambda: r.run({ref.io.input_name: x})},
                                    runs=60, warmup=5)
    ratio = stats["chosen"].p50 / stats["fp32"].p50
    row = {"case": case, "chosen": sel["chosen"], "status": sel["status"],
           "ratio_to_fp32": round(ratio, 4), "chosen_p50_ms": stats["chosen"].p50,
           "fp32_p50_ms": stats["fp32"].p50, "build_seconds": round(build_s, 1),
           "build_timings_ratio": {n: t.get("ratio_to_fp32") for n, t in sel["timings_ms"].items()},
           "candidates_passed": {n: g["passed"] for n, g in sel["candidates"].items() if g},
           "excluded": sel["isa"]["excluded"], "cpu_flags": sel["isa"]["host_flags"],
           "machine": machine_info()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fp32-rule-{case}-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(row, indent=1, default=str))
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}, default=str))
    if sel["status"] == "fallback-fp32":
        assert art.model_path.read_bytes() == ref.model_path.read_bytes()
    else:
        assert ratio <= 1.0, f"{case}: chosen {sel['chosen']} {ratio:.3f}x FP32"
