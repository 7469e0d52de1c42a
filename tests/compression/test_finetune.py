"""Recovery fine-tuning: head-only phase, distillation, early stopping, checkpoint resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from edgemed.errors import InvalidInputError
from edgemed.recovery import FinetuneConfig, finetune


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_head_phase_trains_only_the_head(task32):
    model = copy.deepcopy(task32[0])
    before = _params(model)
    res = finetune(model, _small(task32[1]), task32[2],
                   FinetuneConfig(head_epochs=1, epochs=0, lr=1e-2, restore_best=False))
    after = _params(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"6.weight", "6.bias"}  # backbone and its BN statistics frozen
    assert res.history[0]["phase"] == "head"


def _small(xy, n=128):
    return xy[0][:n], xy[1][:n]


def test_full_phase_with_teacher_and_sparsity_kept(task32):
    from edgemed.passes.prune_unstructured import magnitude_prune
    from edgemed.passes.torch_common import weight_sparsity

    teacher = task32[0]
    model = copy.deepcopy(teacher)
    magnitude_prune(model, 0.6)
    zeros = weight_sparsity(model)["total"]
    res = finetune(model, _small(task32[1]), task32[2], FinetuneConfig(epochs=2, full_lr=1e-3),
                   teacher=teacher)
    assert weight_sparsity(model)["total"] == pytest.approx(zeros)
    assert len(res.history) == 2 and res.best_metric >= res.history[0]["val_accuracy"] - 1e-9


def test_early_stopping_restores_best(task32):
    model = copy.deepcopy(task32[0])
    res = finetune(model, _small(task32[1]), task32[2],
                   FinetuneConfig(epochs=20, full_lr=5e-2, patience=1, min_delta=0.5))
    assert res.stopped_early and len(res.history) == 1  # no epoch improves by 0.5
    from tests.helpers.compress_helpers import accuracy

    assert accuracy(model, task32[2]) == pytest.approx(res.best_metric)


def test_checkpoint_resume_matches_uninterrupted_run(task32, tmp_path):
    cfg = FinetuneConfig(head_epochs=1, epochs=2, full_lr=1e-3, patience=5, restore_best=False)
    train, val = _small(task32[1], 96), _small(task32[2], 64)
    ref = copy.deepcopy(task32[0])
    finetune(ref, train, val, cfg, teacher=task32[0])

    class Stop(Exception):
        pass

    def interrupt(step, row):
        if step == 1:
            raise Stop

    first = copy.deepcopy(task32[0])
    with pytest.raises(Stop):
        finetune(first, train, val, cfg, teacher=task32[0], checkpoint_dir=tmp_path,
                 on_epoch=interrupt)
    hp = json.loads((tmp_path / "hparams.json").read_text())
    assert hp["config"]["epochs"] == 2 and (tmp_path / "checkpoint.pt").is_file()
    resumed = copy.deepcopy(task32[0])
    res = finetune(resumed, train, val, cfg, teacher=task32[0], checkpoint_dir=tmp_path)
    assert res.resumed_from == 1 and len(res.history) == 3
    for k, v in ref.state_dict().items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-5), k
    with pytest.raises(InvalidInputError) as e:
        finetune(copy.deepcopy(task32[0]), train, val, cfg.model_copy(
            update={"full_lr": 1e-2}), checkpoint_dir=tmp_path)
    assert e.value.code == "checkpoint-mismatch"


def test_finetune_pass_records_history(torch_artifact, ctx, tmp_path):
    from edgemed.passes.base import get_pass_class

    out = get_pass_class("finetune")({"epochs": 1, "checkpoint_dir": str(tmp_path / "ck")})(
        torch_artifact, tmp_path, ctx)
    rec = out.provenance[-1]
    assert rec["epochs_run"] == 1 and (tmp_path / "ck" / "checkpoint.pt").is_file()


def test_bad_data_is_rejected(task32):
    x, y = task32[1]
    with pytest.raises(InvalidInputError):
        finetune(copy.deepcopy(task32[0]), (x, y[:-1]), task32[2], FinetuneConfig(epochs=1))
    with pytest.raises(InvalidInputError):
        finetune(copy.deepcopy(task32[0]), (x, -np.ones_like(y)), task32[2],
                 FinetuneConfig(epochs=1))
