"""A search shared by two worker processes over a real PostgreSQL, latency timed on Ray nodes
that carry the trials' target resource (issue 19 bar: 8 trials, slow; 2 in the default run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.distributed import nodes_with
from edgemed.errors import InvalidInputError
from edgemed.search import SearchConfig, SearchSpace, SearchTask, run_search

ROOT = Path(__file__).resolve().parents[2]
SPACE = SearchSpace(structured_ratio=(0.0, 0.5), importance=("l1",), sparsity=(0.0, 0.5),
                    clusters=(0, 16), precision=("int8-u8s8", "fp32"), calibration=("minmax",),
                    finetune_epochs=(0,), finetune_lr=(1e-4,))


def _task() -> SearchTask:
    import torch

    from tests.helpers.compress_helpers import synthetic_arrays as _arrays

    from edgemed.search.demo import small_cnn
    from edgemed.train import TrainConfig, train_classifier

    train, val = _arrays(96, 1), _arrays(64, 2)
    torch.manual_seed(0)
    m = small_cnn(1, 2, width=8)
    train_classifier(m, *train, TrainConfig(epochs=3, lr=5e-3))
    return SearchTask(model=m.eval(), train=train, val=val, calibration=train[0][:16],
                      class_names=("a", "b"))


def _study_rows(url: str) -> tuple[list, list]:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="ray-bar", storage=url)
    trials = study.get_trials(deepcopy=False)
    return [t for t in trials if t.state == TrialState.COMPLETE], trials


def _run_two_workers(ray_cluster, postgres, tmp_path: Path, trials: int) -> list:
    import torch

    task_file = tmp_path / "task.pt"
    torch.save(_task(), task_file)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.ray.search_worker", str(task_file), str(tmp_path / f"w{i}"),
         postgres.url, ray_cluster.address, "1", str(trials), "cpu-x86"],
        cwd=ROOT, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = [p.communicate(timeout=1500) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    return [json.loads(so.strip().splitlines()[-1]) for so, _ in outs]


def _check(postgres, trials: int) -> list:
    complete, every = _study_rows(postgres.url)
    assert len(complete) == trials
    assert len({t.number for t in complete}) == trials
    assert len({tuple(sorted(t.params.items())) for t in complete}) == trials  # no duplicate
    x86 = {n["node_id"] for n in nodes_with("cpu-x86")}
    for t in complete:
        assert t.user_attrs["latency_target"] == "cpu-x86"
        assert t.user_attrs["latency_node_id"] in x86
        assert t.user_attrs["latency_device_id"] in ("dev-a", "dev-b")
        assert t.user_attrs["latency_ms"] > 0
    return every


def test_search_needs_a_target(ray_cluster, tmp_path: Path) -> None:
    cfg = SearchConfig(trials=1, ray=ray_cluster.address, space=SPACE)
    with pytest.raises(InvalidInputError) as e:
        run_search(None, cfg, tmp_path)  # type: ignore[arg-type]
    assert e.value.code == "needs-target"


def test_two_workers_share_a_postgres_study(ray_cluster, postgres, tmp_path: Path) -> None:
    ran = _run_two_workers(ray_cluster, postgres, tmp_path, 2)
    every = _check(postgres, 2)
    surplus = [t for t in every if t.number >= 2]
    assert all(t.state.name == "FAIL" for t in surplus)
    assert sum(r["ran"] for r in ran) >= 2


@pytest.mark.slow
def test_bar_eight_trials_two_workers(ray_cluster, postgres, tmp_path: Path) -> None:
    """Issue 19 bar: 8 complete trials, none duplicated, each timed on a cpu-x86 node."""
    import optuna

    try:  # the default-run test may have used the name
        optuna.delete_study(study_name="ray-bar", storage=postgres.url)
    except KeyError:
        pass
    _run_two_workers(ray_cluster, postgres, tmp_path, 8)
    every = _check(postgres, 8)
    complete, _ = _study_rows(postgres.url)
    print("bar: trials", [(t.number, t.user_attrs["latency_device_id"],
                           round(t.user_attrs["latency_ms"], 3)) for t in complete],
          "surplus", len(every) - 8)
