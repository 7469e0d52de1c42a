"""OpenVINO: edgemed's openvino backend on the QDQ artifact and on the cpu-x86 NNCF variant, and
the NNCF + OpenVINO defaults peer; timed by pytest-benchmark and checked against FP32."""

from __future__ import annotations

import importlib.util

import edgemed_runtime
import numpy as np
import pytest
from bench_common import MODELS, THREADS, logits, top1_agreement

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (pip install 'edgemed[openvino]')")


def _runner(model: str, variant: str, artifacts, data):
    if variant == "nncf-defaults-peer":
        from edgemed.bench.candidates import open_runner
        from edgemed.bench.peers import build_peers

        ref = artifacts(model, "cpu-x86", "ort-int8-u8s8") / "reference" / "model.onnx"
        peer = next(c for c in build_peers(ref, data.calib, threads=THREADS,
                                           which=("nncf+openvino",)).candidates)
        r = open_runner(peer)
        return r.run, r.close
    if variant == "qdq-on-openvino":
        path, backend = artifacts(model, "cpu-x86", "ort-int8-u8s8"), "openvino"
    else:
        path, backend = artifacts(model, "cpu-x86", "ov-nncf-int8"), None
    sess = edgemed_runtime.open(path, backend=backend, options={"threads": THREADS})
    return (lambda x: sess.run({sess.io.input_name: x})[sess.io.output_names[0]]), sess.close


@pytest.mark.parametrize("variant", ["nncf-int8", "qdq-on-openvino", "nncf-defaults-peer"])
@pytest.mark.parametrize("model", list(MODELS))
def test_openvino(benchmark, artifacts, data, model: str, variant: str) -> None:
    from edgemed_runtime.backends import backend_names

    if variant != "nncf-defaults-peer" and "openvino" not in backend_names():
        pytest.skip("edgemed_runtime has no openvino backend registered")
    run, close = _runner(model, variant, artifacts, data)
    ref_dir = artifacts(model, "cpu-x86", "ort-int8-u8s8") / "reference"
    try:
        benchmark.group = f"{model} openvino"
        benchmark.extra_info.update({"model": model, "variant": variant})
        out = benchmark(run, data.check[:1])
        assert np.asarray(out).shape == (1, 2)
        got = logits(run, data.check)
    finally:
        close()
    with edgemed_runtime.open(ref_dir, options={"threads": THREADS}) as ref:
        want = logits(lambda x: ref.run({ref.io.input_name: x})[ref.io.output_names[0]], data.check)
    agree = top1_agreement(want, got)
    benchmark.extra_info["top1_agreement"] = agree
    assert agree >= 0.99, f"{model} {variant}: top-1 agreement with FP32 {agree:.3f} < 0.99"
