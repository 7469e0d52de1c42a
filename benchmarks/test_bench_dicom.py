"""Decode + preprocess to the 224x224 model input: edgemed vs plain pydicom + numpy, on the same
pydicom test files in one run.

    pytest benchmarks/test_bench_dicom.py --benchmark-enable -s

Bars: edgemed >= 1.0x the baseline on every file, >= 2x in aggregate (sum of median times) over
the large compressed images (the JPEG 2000 radiographs and MR). Per-file ratios are the
round-paired median: the baseline runs in each round's setup, right before edgemed, so both see
the same load on a shared machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dicom_baseline import plain_pydicom  # noqa: E402

from edgemed_runtime.dicom import load_input  # noqa: E402
from edgemed_runtime.preprocess import PreprocessSpec  # noqa: E402

LARGE_COMPRESSED = ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm",
                    "MR2_J2KR.dcm", "MR2_J2KI.dcm")
OTHERS = ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm", "US1_J2KR.dcm", "US1_UNCR.dcm",
          "JPGLosslessP14SV1_1s_1f_8b.dcm", "SC_rgb_jpeg_dcmtk.dcm", "OBXXXX1A.dcm", "CT_small.dcm",
          "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
          "emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "rtdose.dcm")
SPEC = PreprocessSpec()  # 224x224, grey, fast JPEG 2000 path on
TIMES: dict[str, dict] = {}


def _path(name: str) -> str | None:
    from pydicom.data import get_testdata_file

    return get_testdata_file(name)


def _edgemed(path: str) -> np.ndarray:
    return load_input(path, SPEC)


@pytest.mark.parametrize("name", LARGE_COMPRESSED + OTHERS)
def test_decode_preprocess(benchmark, name):
    """pytest-benchmark times edgemed; each round's (untimed) setup first runs the plain
    pydicom pipeline on the same file and times it, so the two alternate round by round and
    see the same machine load. Ratio per file = median over rounds of baseline / edgemed."""
    path = _path(name)
    if path is None:
        pytest.skip("needs pydicom-data")
    benchmark.group = "decode+preprocess to 224x224 (edgemed; pydicom in setup)"
    base: list[float] = []
    outputs: list[np.ndarray] = []

    def setup():
        t0 = time.perf_counter()
        outputs.append(plain_pydicom(path))
        base.append(time.perf_counter() - t0)
        return (path,), {}

    big = Path(path).stat().st_size > 1_000_000
    rounds = 9 if big else 41
    out = benchmark.pedantic(_edgemed, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    assert out.shape[-2:] == (224, 224) and np.isfinite(out).all()
    assert (224, 224) in (outputs[-1].shape[:2], outputs[-1].shape[-2:])
    if benchmark.stats is not None:
        ours = list(benchmark.stats.stats.data)
        theirs = base[-len(ours):]
        paired = sorted(b / e for b, e in zip(theirs, ours))
        TIMES[name] = {"pydicom": (min(theirs), float(np.median(theirs))),
                       "edgemed": (min(ours), float(np.median(ours))),
                       "ratio": float(np.median(paired))}


def test_bars():
    """Per-file ratios and the aggregate over the large compressed images (runs last)."""
    if not TIMES:
        pytest.skip("benchmarks disabled (run with --benchmark-enable)")
    print(f"\n{'file':34s} {'pydicom ms':>11s} {'edgemed ms':>11s} {'ratio':>6s}  (min/min)")
    for name, t in TIMES.items():
        (bmin, bmed), (emin, emed) = t["pydicom"], t["edgemed"]
        print(f"{name:34s} {bmed * 1e3:11.2f} {emed * 1e3:11.2f} {t['ratio']:6.2f}  ({bmin / emin:.2f})")
    large = [n for n in LARGE_COMPRESSED if n in TIMES]
    agg = sum(TIMES[n]["pydicom"][1] for n in large) / sum(TIMES[n]["edgemed"][1] for n in large)
    print(f"aggregate over large compressed ({len(large)} files, sum of medians): {agg:.2f}x")
    slow = {n: round(t["ratio"], 2) for n, t in TIMES.items() if t["ratio"] < 1.0}
    assert not slow, f"slower than plain pydicom on: {slow}"
    assert agg >= 2.0
