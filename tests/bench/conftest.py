"""Fixtures of the bench tests: a private cache folder, one small benchmark run shared by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """EDGEMED_CACHE pointed at a temporary folder (ceilings, peers); inherited by workers."""
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("edgemed-cache")
        mp.setenv("EDGEMED_CACHE", str(d))
        yield d


@pytest.fixture(scope="session")
def tiny_bench(tiny_artifact: Any, bench_cache: Path) -> Any:
    """``bench`` of the tiny cpu-x86 artifact with every peer, two processes, batch 1 and 4."""
    from edgemed.bench.api import bench
    from edgemed.bench.runner import BenchConfig

    cfg = BenchConfig(runs=6, warmup=1, processes=2, cold_processes=1, batch_sizes=(1, 4))
    return bench(tiny_artifact.path, peers=True, backends=("onnxruntime", "no-such-backend"),
                 config=cfg)
