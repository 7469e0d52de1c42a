"""Issue 7's bar: ``edgemed bench --peers`` on MONAI DenseNet-121 finishes on 2 cores in under
5 minutes and prints the ratio table; repeated twice, the ratios agree within 10%.

The artifact is built beforehand (the ``artifacts`` fixture, cached); each timed run starts with an
empty peer cache, so quantizing the peers (ORT quantize_static, NNCF) is inside the 5 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

LIMIT_S = 300.0
AGREE = 0.10

# `edgemed bench` (the bench command on a typer app of its own, whatever the CLI registers)
CLI = "\n".join([
    "import typer",
    "from edgemed.cli import bench",
    "app = typer.Typer(pretty_exceptions_enable=False)",
    "bench.register(app)",
    "@app.callback()",
    "def root() -> None:",
    "    pass",
    "app()",
])


def _edgemed_bench(args: list[str], cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "EDGEMED_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CLI, "bench", *args], env=env, capture_output=True,
                          text=True, timeout=LIMIT_S * 2)
    return time.perf_counter() - t0, proc


def test_bench_peers_densenet_under_5_minutes_and_repeatable(artifacts, tmp_path) -> None:
    art = artifacts("densenet121", "cpu-x86", "auto")
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        secs, proc = _edgemed_bench([str(art), "--peers", "--save", str(out)], tmp_path / f"c{i}")
        # 0, or 1 when the target's latency budget is exceeded (reported, not a failure here)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "Ratios" in proc.stdout and "x best peer" in proc.stdout, proc.stdout[-3000:]
        assert secs < LIMIT_S, f"run {i + 1} took {secs:.0f} s"
        runs.append(json.loads(out.read_text()))
    a = {r["name"]: r for r in runs[0]["ratio_table"]}
    b = {r["name"]: r for r in runs[1]["ratio_table"]}
    diffs = {}
    for name in a:
        for key in ("vs_fp32", "vs_best_peer"):
            if key in a[name] and key in b.get(name, {}):
                diffs[f"{name} {key}"] = abs(a[name][key] - b[name][key]) / a[name][key]
    assert diffs
    bad = {k: round(v, 3) for k, v in diffs.items() if v > AGREE}
    loads = [r["load"]["others_mean_cores"] for r in runs]
    assert not bad, f"ratios moved more than {AGREE:.0%} between repeats: {bad} (others' load " \
                    f"{loads} cores)"
