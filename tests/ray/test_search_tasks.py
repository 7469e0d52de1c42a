"""``edgemed search --ray --workers N``: each trial built by a Ray actor on a CPU node of a real
local cluster, timed on a node carrying the target's resource; one command drives the study."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edgemed.distributed import nodes_with
from edgemed.errors import InvalidInputError
from edgemed.search import SearchConfig, run_search

from .test_search_ray import SPACE, _task


def test_trials_run_as_ray_tasks(ray_cluster, tmp_path: Path) -> None:
    import ray

    cfg = SearchConfig(strategy="grid", objective="latency", trials=3, seed=0, timing_runs=5,
                       space=SPACE, gradcam=False, keep_models=True, ray=ray_cluster.address,
                       target="cpu-x86", ray_wait_s=30, workers=2,
                       storage=f"sqlite:///{tmp_path / 'study.db'}")
    res = run_search(_task(), cfg, tmp_path / "out")
    assert res.ran == 3 and len(res.trials) == 3
    assert sorted(r["trial"] for r in res.trials) == [0, 1, 2]
    keys = {tuple(sorted((k, r[k]) for k in SPACE.choices())) for r in res.trials}
    assert len(keys) == 3  # no grid point twice
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    x86 = {n["node_id"] for n in nodes_with("cpu-x86")}
    for r in res.trials:
        assert r["build_node_id"] in alive and r["build_host"]
        assert r["latency_node_id"] in x86 and r["latency_ms"] > 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "trials.csv")))
    assert all(row["build_node_id"] and row["latency_node_id"] for row in rows)
    for r in res.pareto:  # the front's models were sent back and written by the driver
        assert (tmp_path / "out" / "trials" / f"trial-{r['trial']:04d}" / "model.onnx").is_file()


def test_workers_need_ray(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        run_search(None, SearchConfig(trials=1, workers=2), tmp_path)  # type: ignore[arg-type]
    assert e.value.code == "bad-option"
