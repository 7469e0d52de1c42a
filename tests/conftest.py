"""Shared fixtures: tiny models, synthetic DICOM, a built artifact (all seeded, all local)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled synthetic CT set (8 patients x 8 slices, 32x32) with labels.csv."""
    from edgemed.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, n_patients=8, slices_per_patient=8, size=32, seed=0)
    return root


@pytest.fixture(scope="session")
def spec16():
    from edgemed_runtime.preprocess import PreprocessSpec

    return PreprocessSpec(window=(40.0, 400.0), size=(16, 16))


@pytest.fixture(scope="session")
def trained_tiny(synthetic_dir: Path, spec16):
    """TinyNet trained for a few epochs on the synthetic folder (seeded)."""
    from tests.helpers.tiny_models import make_net

    from edgemed.dicom import load_folder
    from edgemed.train import TrainConfig, train_classifier

    data = load_folder(synthetic_dir, spec16, class_names=("no_lesion", "lesion"))
    net = make_net()
    train_classifier(net, data.x, data.y, TrainConfig(epochs=30, batch_size=16, lr=1e-2, seed=0))
    return net


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path, spec16,
                  trained_tiny):
    """The trained TinyNet built for cpu-x86 from the synthetic folder (calib + validation), as
    the variant that is an INT8 candidate on every x86 CPU (``ort-int8-rr``), so the tests that
    need an INT8 artifact get one whichever variant would be fastest here."""
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions

    out = tmp_path_factory.mktemp("built") / "art"
    return edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                         validation=synthetic_dir, target="cpu-x86", out=out,
                         labels=("no_lesion", "lesion"), preprocess=spec16,
                         options=BuildOptions(select="ort-int8-rr"))


@pytest.fixture(scope="session")
def tiny_auto(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path, spec16,
              trained_tiny):
    """The same build with automatic selection (every candidate this CPU is eligible for)."""
    import torch

    import edgemed

    out = tmp_path_factory.mktemp("built") / "auto"
    return edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                         validation=synthetic_dir, target="cpu-x86", out=out,
                         labels=("no_lesion", "lesion"), preprocess=spec16)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
