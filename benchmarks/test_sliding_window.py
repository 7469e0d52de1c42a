"""Sliding-window inference: edgemed (numpy ``sliding_window`` + onnxruntime FP32) vs MONAI
``sliding_window_inference`` (torch FP32) on the same MONAI 3D UNet, in one run.

    pytest benchmarks/test_sliding_window.py --benchmark-enable -s

Issue 15's bar: gaussian blending, overlap 0.5, max |diff| <= 1e-4 (asserted). The time ratio
edgemed / MONAI is measured round by round (MONAI runs in each round's untimed setup, right
before edgemed, so both see the same load on a shared machine) with the same thread count for
torch and onnxruntime (``$EDGEMED_BENCH_THREADS``, default: the usable cores, at most 2); it is
printed and recorded in the JSON's ``extra_info``, not asserted (the issue sets no time bar for
this comparison). The CPU model and flags are in ``machine_info.edgemed`` (conftest.py).
"""

from __future__ import annotations

import io
import os
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
monai_inferers = pytest.importorskip("monai.inferers")

from monai.networks.nets import UNet  # noqa: E402

from edgemed_runtime import InferenceSpec  # noqa: E402
from edgemed_runtime.inference import sliding_window  # noqa: E402
from edgemed_runtime.inference.sliding_window import window_count  # noqa: E402

VOLUME = (64, 96, 96)
SPEC = InferenceSpec(roi_size=(64, 64, 64), overlap=0.5, blend="gaussian", sw_batch_size=1)
THREADS = int(os.environ.get("EDGEMED_BENCH_THREADS", min(2, len(os.sched_getaffinity(0)))))
BAR = 1e-4
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def models() -> tuple[Any, Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """(torch UNet, onnxruntime predictor of its ONNX export, the input volume)."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32),
               strides=(2, 2), num_res_units=1).eval()
    axes = {"input": {0: "b", 2: "z", 3: "y", 4: "x"}, "output": {0: "b", 2: "z", 3: "y", 4: "x"}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, *SPEC.roi_size),), buf, opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes=axes)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, *VOLUME)).astype(np.float32)
    return net, (lambda w: sess.run(None, {"input": w})[0]), x


def _monai(net: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return monai_inferers.sliding_window_inference(
            torch.from_numpy(x), SPEC.roi_size, SPEC.sw_batch_size, net, overlap=SPEC.overlap,
            mode=SPEC.blend, sigma_scale=SPEC.sigma_scale).numpy()


def test_parity_unet3d(models) -> None:
    """max |edgemed - MONAI| <= 1e-4 on the 64x96x96 volume (gaussian, overlap 0.5)."""
    net, predictor, x = models
    ours, ref = sliding_window(x, predictor, SPEC), _monai(net, x)
    assert ours.shape == ref.shape == (1, 3, *VOLUME)
    diff = float(np.abs(ours - ref).max())
    RESULTS["max_abs_diff"] = diff
    RESULTS["output_max_abs"] = float(np.abs(ref).max())
    assert diff <= BAR


def test_blending_overhead_vs_monai(models) -> None:
    """The cost outside the model: both functions with a trivial predictor (the window repeated
    to 3 channels), interleaved; recorded, not asserted. The outputs are equal."""
    _, _, x = models
    npred = lambda w: np.repeat(w, 3, axis=1)  # noqa: E731
    tpred = lambda w: w.repeat(1, 3, 1, 1, 1)  # noqa: E731

    def monai() -> np.ndarray:
        return monai_inferers.sliding_window_inference(
            torch.from_numpy(x), SPEC.roi_size, 1, tpred, overlap=SPEC.overlap,
            mode=SPEC.blend, sigma_scale=SPEC.sigma_scale).numpy()

    assert float(np.abs(sliding_window(x, npred, SPEC) - monai()).max()) <= 1e-6
    ours, theirs = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        monai()
        t1 = time.perf_counter()
        sliding_window(x, npred, SPEC)
        theirs.append(t1 - t0)
        ours.append(time.perf_counter() - t1)
    RESULTS.update(overhead_edgemed_ms=float(np.median(ours)) * 1e3,
                   overhead_monai_ms=float(np.median(theirs)) * 1e3)
    print(f"\nblending overhead (trivial predictor): edgemed {RESULTS['overhead_edgemed_ms']:.1f} ms, "
          f"MONAI {RESULTS['overhead_monai_ms']:.1f} ms")


def test_time_edgemed_vs_monai(benchmark, models) -> None:
    """pytest-benchmark times edgemed; each round's setup first times MONAI on the same input."""
    net, predictor, x = models
    benchmark.group = f"sliding window UNet3D {'x'.join(map(str, VOLUME))}, {THREADS} threads"
    base: list[float] = []

    def setup():
        t0 = time.perf_counter()
        _monai(net, x)
        base.append(time.perf_counter() - t0)
        return (x, predictor, SPEC), {}

    out = benchmark.pedantic(sliding_window, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    assert out.shape == (1, 3, *VOLUME) and np.isfinite(out).all()
    if benchmark.stats is None:
        return
    ours = list(benchmark.stats.stats.data)
    theirs = base[-len(ours):]
    ratio = float(np.median([e / m for e, m in zip(ours, theirs)]))
    RESULTS.update(edgemed_ms=float(np.median(ours)) * 1e3, monai_ms=float(np.median(theirs)) * 1e3,
                   ratio_edgemed_over_monai=ratio, threads=THREADS,
                   windows=window_count(VOLUME, SPEC))
    benchmark.extra_info.update(RESULTS)
    print(f"\nsliding window {VOLUME} ROI {SPEC.roi_size} gaussian overlap {SPEC.overlap}, "
          f"{RESULTS['windows']} windows, {THREADS} threads: edgemed {RESULTS['edgemed_ms']:.1f} ms, "
          f"MONAI {RESULTS['monai_ms']:.1f} ms, ratio {ratio:.3f} (per-round median); "
          f"max |diff| {RESULTS.get('max_abs_diff', float('nan')):.2e}")
