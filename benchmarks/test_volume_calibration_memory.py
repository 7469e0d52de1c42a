"""Calibration over 200 synthetic series: peak RSS independent of the number of series.

    pytest benchmarks/test_volume_calibration_memory.py -s

Issue 15's bar: ``edgemed.volumes.sample_volume_calibration`` (count 64) over 200 series peaks
within 10% of the same call over 20 of them. 200 synthetic CT series (32 x 64 x 64 stored,
varied spacing and orientation) are written once for the run; the first 20 are copied with their
``labels.csv`` rows into a second folder. Each call runs in a fresh child process that reads its
own peak (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across the fork) and the RSS
after its imports. The model is a
sliding-window one (ROI 16^3 crops), so both calls return the same 64 x 1 x 16^3 samples and
differ only in the series they index and read (20 vs 64). Beyond the bar as written (whole
process peak), what the call adds to the process after its imports may grow by at most 10% plus
one stored volume's float32 size: holding every volume read would add ~44 volumes.
Determinism: the child's sha256 equals this process's for the same seed, another seed differs.
``EDGEMED_BENCH_CALIB_SERIES`` (default 200) sets the number of series. Figures and the CPU
flags go to ``.benchmarks/edgemed-bench/volume-calibration-memory-*.json``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgemed_runtime as rt

RESULTS = Path(os.environ.get("EDGEMED_BENCH_RESULTS", ".benchmarks/edgemed-bench"))
N_SERIES = int(os.environ.get("EDGEMED_BENCH_CALIB_SERIES", "200"))
SUBSET, COUNT, SEED = 20, 64, 0
STORED = (32, 64, 64)
ROI = (16, 16, 16)
SPEC = rt.VolumeSpec(axcodes="RAS", spacing=(1.6, 1.6, 2.5), intensity=(-200.0, 300.0, 0.0, 1.0))
PEAK_BAR = 0.10

CHILD = r'''
import json, re, sys
cfg = json.loads(sys.argv[1])
def mem(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
import edgemed_runtime as rt
from edgemed.volumes import sample_volume_calibration
io = rt.IOSpec(input_shape=(1, 1, *cfg["roi"]), dynamic_spatial=True)
inf = rt.InferenceSpec(mode="sliding_window", roi_size=tuple(cfg["roi"]))
spec = rt.VolumeSpec.from_dict(cfg["spec"])
after_imports = mem("VmRSS")
cal = sample_volume_calibration(cfg["root"], io, spec, inference=inf, count=cfg["count"],
                                seed=cfg["seed"])
print(json.dumps({"after_imports": after_imports, "peak": mem("VmHWM"), "total": cal.total,
                  "sha256": cal.sha256, "shape": list(cal.x.shape)}))
'''


def _io() -> tuple[Any, Any]:
    return (rt.IOSpec(input_shape=(1, 1, *ROI), dynamic_spatial=True),
            rt.InferenceSpec(mode="sliding_window", roi_size=ROI))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The N-series folder and a folder holding copies of its first 20 series."""
    from edgemed.data.synthetic_series import write_series_dataset

    base = tmp_path_factory.mktemp("calib-memory")
    t0 = time.perf_counter()
    full = write_series_dataset(base / "all", n_series=N_SERIES, seed=7, shape=STORED)
    write_s = time.perf_counter() - t0
    sub = base / "first20"
    with open(full / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:SUBSET + 1]:
        shutil.copytree(full / row[0], sub / row[0])
    with open(sub / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows[:SUBSET + 1])
    return {"all": full, "first20": sub, "write_s": round(write_s, 1)}


def _child(root: Path) -> dict[str, Any]:
    cfg = {"root": str(root), "roi": list(ROI), "spec": SPEC.to_dict(), "count": COUNT, "seed": SEED}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_peak_rss_independent_of_series_count(roots: dict[str, Any]) -> None:
    """Peak RSS over N series within 10% of the 20-series run; the added memory grows by less
    than 10% + one volume; the same seed gives the same samples in another process."""
    from edgemed.bench.machine import machine_info
    from edgemed.volumes import sample_volume_calibration

    t0 = time.perf_counter()
    small = _child(roots["first20"])
    t1 = time.perf_counter()
    large = _child(roots["all"])
    t2 = time.perf_counter()
    assert (small["total"], large["total"]) == (SUBSET, N_SERIES)
    assert small["shape"] == large["shape"] == [COUNT, 1, *ROI]
    io, inf = _io()
    here = sample_volume_calibration(roots["all"], io, SPEC, inference=inf, count=COUNT, seed=SEED)
    other = sample_volume_calibration(roots["all"], io, SPEC, inference=inf, count=COUNT, seed=SEED + 1)
    assert here.sha256 == large["sha256"] != other.sha256
    assert np.isfinite(here.x).all() and here.x.std(axis=(1, 2, 3, 4)).min() > 0  # real crops

    mib, volume_f32 = 2 ** 20, int(np.prod(STORED)) * 4
    added = {n: m["peak"] - m["after_imports"] for n, m in (("20", small), (str(N_SERIES), large))}
    row = {"series": [SUBSET, N_SERIES], "count": COUNT, "roi": list(ROI), "stored": list(STORED),
           "peak_mib": {"20": round(small["peak"] / mib, 1), str(N_SERIES): round(large["peak"] / mib, 1)},
           "after_imports_mib": {"20": round(small["after_imports"] / mib, 1),
                                 str(N_SERIES): round(large["after_imports"] / mib, 1)},
           "added_mib": {k: round(v / mib, 2) for k, v in added.items()},
           "peak_ratio": round(large["peak"] / small["peak"], 4),
           "seconds": {"20": round(t1 - t0, 1), str(N_SERIES): round(t2 - t1, 1),
                       "write_series": roots["write_s"]},
           "sha256": large["sha256"], "machine": machine_info()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"volume-calibration-memory-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(row, indent=1, default=str))
    print("\n" + json.dumps({k: v for k, v in row.items() if k != "machine"}))
    assert abs(large["peak"] - small["peak"]) <= PEAK_BAR * small["peak"], row["peak_mib"]
    growth = added[str(N_SERIES)] - added["20"]
    assert growth <= PEAK_BAR * added["20"] + volume_f32, row["added_mib"]
