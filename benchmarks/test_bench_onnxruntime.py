"""onnxruntime backend: FP32 reference, the cpu-x86 INT8 artifact (U8S8 QDQ) and the mobile (ORT
format) artifact, each timed by pytest-benchmark and checked against FP32 on the validation set."""

from __future__ import annotations

import edgemed_runtime
import numpy as np
import pytest
from bench_common import MODELS, THREADS, logits, top1_agreement

VARIANTS = {
    "fp32": ("cpu-x86", "ort-int8-u8s8", "reference"),
    "int8-u8s8": ("cpu-x86", "ort-int8-u8s8", ""),
    "mobile-ort-format": ("mobile-android", "auto", ""),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model", list(MODELS))
def test_onnxruntime(benchmark, artifacts, data, model: str, variant: str) -> None:
    target, select, sub = VARIANTS[variant]
    art = artifacts(model, target, select)
    ref_dir = artifacts(model, "cpu-x86", "ort-int8-u8s8") / "reference"
    path = art / sub if sub else art
    opts = {"threads": THREADS}
    with edgemed_runtime.open(ref_dir, options=opts) as ref, \
            edgemed_runtime.open(path, options=opts) as sess:
        def run(x: np.ndarray) -> np.ndarray:
            return sess.run({sess.io.input_name: x})[sess.io.output_names[0]]

        x1 = data.check[:1]
        benchmark.group = f"{model} onnxruntime"
        benchmark.extra_info.update({"model": model, "variant": variant, "target": target,
                                     "size_bytes": sess.info.get("size_bytes")})
        out = benchmark(run, x1)
        assert out.shape == (1, 2) and np.isfinite(out).all()
        want = logits(lambda x: ref.run({ref.io.input_name: x})[ref.io.output_names[0]], data.check)
        got = logits(run, data.check)
    agree = top1_agreement(want, got)
    benchmark.extra_info["top1_agreement"] = agree
    assert agree >= 0.99, f"{model} {variant}: top-1 agreement with FP32 {agree:.3f} < 0.99"
