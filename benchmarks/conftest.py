"""Shared fixtures of the benchmark suites: MONAI models built with ``edgemed.build`` (random
weights, cached under $EDGEMED_CACHE), a synthetic CT validation set, and the machine record added
to pytest-benchmark's JSON. Run with ``pytest benchmarks/ --benchmark-enable`` (see README.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from bench_common import INPUT, MODELS  # noqa: E402


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Add the CPU model and flags, cores and library versions to every JSON result."""
    from edgemed.bench.machine import machine_info as edgemed_machine

    machine_info["edgemed"] = edgemed_machine()


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Synthetic CT DICOM (512x512) preprocessed to 1x224x224: calibration + validation set."""
    from edgemed_runtime.preprocess import PreprocessSpec

    from edgemed.bench.sources import synthetic_data

    return synthetic_data(PreprocessSpec(size=(224, 224)), INPUT[1:],
                          tmp_path_factory.mktemp("bench-data"), n_calib=32, n_check=64)


def weights_file(model: str) -> Path:
    """Seeded random weights of ``model`` (one file per model, so every artifact of a model is
    built from the same weights and their outputs can be compared)."""
    import torch

    from edgemed.bench.ceiling import cache_dir
    from edgemed.model import load_model

    path = cache_dir() / "bench-weights" / f"{model}-seed0.pt"
    if not path.is_file():
        torch.manual_seed(0)
        module = load_model(MODELS[model]).module
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(module.state_dict(), tmp)
        tmp.replace(path)
    return path


def _build(model: str, target: str, data: Any, select: str = "auto") -> Path:
    from edgemed.bench.sources import build_source

    return build_source(MODELS[model], input_shape=INPUT, target=target, calib=data.calib,
                        select=select, weights=weights_file(model))


@pytest.fixture(scope="session")
def artifacts(data: Any) -> Any:
    """``artifacts(model, target="cpu-x86", select="auto") -> Path`` (built once, cached)."""
    cache: dict[tuple[str, str, str], Path] = {}

    def get(model: str, target: str = "cpu-x86", select: str = "auto") -> Path:
        from edgemed.errors import ProfileError

        key = (model, target, select)
        if key not in cache:
            try:
                cache[key] = _build(model, target, data, select)
            except ProfileError as exc:
                pytest.skip(f"target {target} / variant {select} is not available: {exc.message}")
        return cache[key]

    return get
