"""The build-time crash probe: a backend that segfaults on a model fails that candidate with the
reason, and the calling process lives on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemed_runtime import BackendError
from edgemed_runtime.backends.base import _REGISTRY
from edgemed_runtime.backends.probe import probe

REPO = Path(__file__).resolve().parents[2]  # where the child process finds ``tests``
SPEC = "tests.backends.crashing_backend:CrashingBackend"


@pytest.fixture()
def crashing(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EDGEMED_RUNTIME_BACKENDS", f"crashing={SPEC}")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setitem(_REGISTRY, "crashing", SPEC)
    return "crashing"


def test_segfault_in_child_is_a_typed_error(crashing: str, run_chain: Any) -> None:
    art = run_chain([])
    with pytest.raises(BackendError) as e:
        probe(art, crashing, {}, np.zeros((1, 1, 16, 16), np.float32))
    assert e.value.code == "backend-crashed" and "SIGSEGV" in (e.value.found or "")
    assert sys.modules  # still here


def test_child_load_error_is_reraised_typed(run_chain: Any, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07 not a model")
    art = run_chain([]).evolve(path=tmp_path)
    with pytest.raises(BackendError) as e:
        probe(art, "onnxruntime", {}, np.zeros((1, 1, 16, 16), np.float32))
    assert e.value.code == "model-load-failed"


def test_build_skips_a_crashing_candidate(crashing: str, tmp_path: Path, trained_tiny: Any,
                                          synthetic_dir: Path, spec16: Any) -> None:
    import torch

    import edgemed

    profile = tmp_path / "crashy.toml"
    profile.write_text('''
name = "crashy"
default_variant = "boom"
[host]
arch = ["x86_64", "AMD64", "aarch64", "arm64"]
[runtime]
threads = 2
[[variants]]
name = "boom"
backend = "crashing"
passes = [{ pass = "export_onnx" }]
[[variants]]
name = "fine"
backend = "onnxruntime"
passes = [{ pass = "export_onnx" }, { pass = "quantize_onnxruntime", activation_type = "uint8", weight_type = "int8" }]
''')
    art = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                        validation=synthetic_dir, target=profile, out=tmp_path / "out",
                        labels=("no_lesion", "lesion"), preprocess=spec16)
    sel = art.provenance[-1]
    # "fine" ships unless the FP32 baseline the profile gets implicitly is faster on this host
    assert sel["chosen"] in ("fine", "fp32-baseline") and sel["candidates"]["fine"]["passed"]
    boom = sel["candidates"]["boom"]
    assert boom["passed"] is False and "backend-crashed" in boom["reasons"][0]


def test_a_crashing_fp32_baseline_still_bars_slower_candidates(crashing: str, tmp_path: Path,
                                                               trained_tiny: Any,
                                                               synthetic_dir: Path,
                                                               spec16: Any) -> None:
    """The baseline fails its gate (its backend crashes): the FP32 reference's time is the bar."""
    import torch

    import edgemed

    def int8(extra: str = "") -> str:
        return ('passes = [{ pass = "export_onnx" }, { pass = "quantize_onnxruntime", '
                f'activation_type = "uint8", weight_type = "int8", reduce_range = true{extra} }}]')

    profile = tmp_path / "crashy-base.toml"
    profile.write_text(f'''
name = "crashy-base"
default_variant = "a"
[host]
arch = ["x86_64", "AMD64", "aarch64", "arm64"]
[runtime]
threads = 2
[[variants]]
name = "a"
backend = "onnxruntime"
{int8()}
[[variants]]
name = "b"
backend = "onnxruntime"
{int8(', per_channel = false')}
[[variants]]
name = "fp32"
backend = "crashing"
baseline = true
passes = [{{ pass = "export_onnx" }}]
''')
    art = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                        validation=synthetic_dir, target=profile, out=tmp_path / "out",
                        labels=("no_lesion", "lesion"), preprocess=spec16)
    sel = art.provenance[-1]
    assert not sel["candidates"]["fp32"]["passed"]
    assert sel["chosen"] in ("a", "b") and sel["status"] == "compressed"
    t = sel["timings_ms"]
    assert "fp32-reference" in t and "fp32" not in t
    if min(t["a"]["p50"], t["b"]["p50"]) > t["fp32-reference"]["p50"]:
        assert "slower than the FP32 reference" in sel["why"]
    else:
        assert t[sel["chosen"]]["p50"] <= t["fp32-reference"]["p50"]
