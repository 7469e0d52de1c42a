"""Issue 19 bar: fleet bench over the 3-node local cluster, one row per node with the resource.

Run: ``pytest -m slow benchmarks/test_ray_fleet.py -s`` (prints the rows and the spread).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray.conftest import ray_cluster  # noqa: E402,F401  (the fixture)
from tests.ray.test_cluster import _bundle  # noqa: E402


@pytest.mark.slow
def test_bar_fleet_one_row_per_node(ray_cluster, tmp_path: Path) -> None:  # noqa: F811
    import ray

    from edgemed.distributed import fleet_bench

    bundle = _bundle(ray_cluster, tmp_path)
    for target in ("cpu-x86", "openvino-cpu"):
        res = fleet_bench(bundle, target=target, runs=200, warmup=20, threads=1)
        carrying = {n["NodeID"] for n in ray.nodes()
                    if n["Alive"] and n["Resources"].get(f"target:{target}")}
        assert sorted(r["node_id"] for r in res.rows) == sorted(carrying)
        assert all(r["error"] is None for r in res.rows)
        print(f"\nbar: {target}: " + json.dumps(
            {"rows": [{k: r[k] for k in ("device_id", "cpu", "runtime", "p50_ms", "p99_ms",
                                         "peak_rss_mb")} for r in res.rows],
             "spread": res.spread}, default=str))
