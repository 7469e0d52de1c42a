"""The compression search: three strategies, constraint handling, Pareto outputs, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgemed.errors import InvalidInputError
from edgemed.search import (SearchConfig, SearchSpace, SearchTask, SimulatedAnnealingSampler,
                            chain, pareto_front, run_search)

SMALL = SearchSpace(structured_ratio=(0.0, 0.5), importance=("l1",), sparsity=(0.0, 0.5),
                    clusters=(0, 16), precision=("int8-u8s8", "fp32"), calibration=("minmax",),
                    finetune_epochs=(0,), finetune_lr=(1e-4,))


@pytest.fixture(scope="module")
def task():
    import torch

    from tests.helpers.compress_helpers import synthetic_arrays as _arrays

    from edgemed.search.demo import small_cnn
    from edgemed.train import TrainConfig, train_classifier

    train, val = _arrays(160, 1), _arrays(96, 2)
    torch.manual_seed(0)
    m = small_cnn(1, 2, width=8)
    train_classifier(m, *train, TrainConfig(epochs=6, lr=5e-3))
    return SearchTask(model=m.eval(), train=train, val=val, calibration=train[0][:32],
                      class_names=("a", "b"))


def test_chain_orders_passes():
    steps = [n for n, _ in chain({"structured_ratio": 0.3, "sparsity": 0.5, "clusters": 8,
                                  "finetune_epochs": 1, "precision": "int8-s8s8"})]
    assert steps == ["prune_structured", "prune_unstructured", "finetune", "cluster_weights",
                     "export_onnx", "quantize_onnxruntime"]
    assert [n for n, _ in chain({"precision": "fp32"})] == ["export_onnx"]


def test_pareto_front():
    rows = [{"objective": 1, "accuracy": 0.8}, {"objective": 2, "accuracy": 0.9},
            {"objective": 2, "accuracy": 0.85}, {"objective": 3, "accuracy": 0.9}]
    assert pareto_front(rows) == rows[:2]


@pytest.mark.parametrize("strategy", ["grid", "tpe", "anneal"])
def test_search_writes_front_and_resumes(task, tmp_path, strategy):
    cfg = SearchConfig(strategy=strategy, trials=2, timing_runs=3, space=SMALL, seed=1,
                       objective="size", gradcam=strategy == "tpe")
    res = run_search(task, cfg, tmp_path)
    assert len(res.trials) == 2 and res.ran == 2
    for f in ("pareto.png", "pareto.csv", "pareto.md", "trials.csv", "summary.json", "study.db"):
        assert (tmp_path / f).is_file(), f
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for r in res.trials:
        assert r["constraint"] <= 0 if r["gate_passed"] else r["constraint"] > 0
        assert r["objective"] == r["size_zlib_bytes"]
    if res.best is not None:
        assert res.best["gate_passed"] and res.best in res.pareto
        assert (tmp_path / "trials" / f"trial-{res.best['trial']:04d}" / "model.onnx").is_file()
    again = run_search(task, cfg.model_copy(update={"trials": 3}), tmp_path)
    assert again.ran == 1 and len(again.trials) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["trials"] == 3
    if strategy == "tpe":
        assert all("gradcam_correlation" in r for r in again.trials)


def test_storage_and_study_errors(task, tmp_path):
    with pytest.raises(InvalidInputError) as e:
        run_search(task, SearchConfig(trials=1, storage="nosuchdb://x"), tmp_path)
    assert e.value.code == "bad-storage"
    run_search(task, SearchConfig(trials=1, space=SMALL, timing_runs=3, gradcam=False),
               tmp_path / "s")
    with pytest.raises(InvalidInputError) as e:
        run_search(task, SearchConfig(trials=2, objective="size", space=SMALL),
                   tmp_path / "s")
    assert e.value.code == "study-mismatch"


def test_annealing_sampler_moves_to_neighbours():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = [0, 1, 2, 3, 4, 5, 6, 7]
    study = optuna.create_study(sampler=SimulatedAnnealingSampler(seed=0))
    prev = None
    for _ in range(15):
        t = study.ask()
        a = t.suggest_categorical("a", choices)
        b = t.suggest_categorical("b", choices)
        if prev is not None and len(study.trials) > 1:
            assert abs(a - prev[0]) + abs(b - prev[1]) <= 14  # params stay in range
        study.tell(t, (a - 5) ** 2 + (b - 2) ** 2)
        prev = (a, b)
    assert study.best_value <= 2  # walks towards the minimum at (5, 2)


def _app():
    """The search command on its own app (the lead adds "search" to edgemed.cli.MODULES)."""
    import typer

    from edgemed.cli.search import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        pass

    return app


def test_cli_rejects_bad_strategy(tmp_path):
    from typer.testing import CliRunner

    app = _app()

    r = CliRunner().invoke(app, ["search", "--out", str(tmp_path), "--strategy", "bogus"])
    assert r.exit_code == 2 and "strategy" in r.output


@pytest.mark.slow
def test_demo_search_20_trials_under_15_minutes(tmp_path):
    import time

    from typer.testing import CliRunner

    app = _app()
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, ["search", "--demo", "--trials", "20", "--out", str(tmp_path),
                                 "--json"])
    seconds = time.perf_counter() - t0
    assert r.exit_code == 0, r.output[-2000:]
    assert (tmp_path / "pareto.png").is_file() and seconds < 15 * 60
