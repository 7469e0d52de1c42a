"""Fixtures of the compression tests: a small synthetic task (32x32 arrays) and a trained CNN."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def task32():
    """(model, train, val, calibration): small_cnn(width=8) trained on 32x32 synthetic slices."""
    import torch

    from edgemed.search.demo import small_cnn
    from edgemed.train import TrainConfig, train_classifier

    from tests.helpers.compress_helpers import synthetic_arrays

    train, val = synthetic_arrays(320, 1), synthetic_arrays(160, 2)
    torch.manual_seed(0)
    model = small_cnn(1, 2, width=8)
    train_classifier(model, *train, TrainConfig(epochs=12, lr=5e-3, seed=0))
    model.eval()
    return model, train, val, train[0][:48]


@pytest.fixture()
def torch_artifact(task32):
    from edgemed_runtime.artifact import Artifact
    from edgemed_runtime.iospec import IOSpec

    model = task32[0]
    return Artifact(path=".", format="torch", model_file="", io=IOSpec(input_shape=(1, 1, 32, 32)),
                    payload=model)


@pytest.fixture()
def ctx(task32):
    from edgemed.passes.base import BuildContext

    _, train, val, calib = task32
    return BuildContext(calibration=calib, seed=0, extras={"train": train, "val": val})
