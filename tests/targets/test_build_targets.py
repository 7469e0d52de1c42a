"""Building the trained TinyNet for each kind of target on this host: what gets chosen, how it was
gated, and what provenance records."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemed.targets import host_matches, load_target

from tests.helpers.selection_rules import assert_selection_rule


def _build(tmp_path: Path, net: Any, data_dir: Path, spec: Any, target: str) -> Any:
    import torch

    import edgemed

    return edgemed.build(net, torch.zeros(1, 1, 16, 16), calibration=data_dir,
                         validation=data_dir, target=target, out=tmp_path / target,
                         labels=("no_lesion", "lesion"), preprocess=spec)


def test_cpu_x86_tries_onnxruntime_and_openvino(tiny_auto: Any) -> None:
    sel = tiny_auto.provenance[-1]
    if not sel["host_matches_target"]:
        pytest.skip("this host cannot stand in for cpu-x86")
    tried = set(sel["candidates"])
    assert {"ort-int8-rr", "ov-qdq-u8s8", "ort-fp32"} <= tried
    assert tried & {"ov-nncf-int8", "ov-nncf-int8-of"}, "one NNCF variant fits every x86 CPU"
    assert sel["gated_with"]["ov-qdq-u8s8"]["backend"] == "openvino"
    assert_selection_rule(sel, load_target("cpu-x86"))


@pytest.mark.skipif(host_matches(load_target("gpu-cuda"))[0], reason="this host has a GPU")
def test_gpu_target_without_gpu_ships_the_default_recipe(tmp_path: Path, trained_tiny: Any,
                                                         synthetic_dir: Path, spec16: Any) -> None:
    from edgemed_runtime.backends.tensorrt import unpack_recipe

    art = _build(tmp_path, trained_tiny, synthetic_dir, spec16, "gpu-cuda")
    sel = art.provenance[-1]
    assert sel["chosen"] == "trt-int8" and sel["latency"] == "unmeasured"
    assert art.format == "trt-plan-recipe" and art.backend == "tensorrt"
    assert sel["gated_with"]["trt-int8"]["backend"] == "onnxruntime"
    assert sel["candidates"]["trt-int8"]["passed"]
    meta, onnx_bytes = unpack_recipe(art.model_path.read_bytes())
    import onnx

    assert meta["precision"] == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load_from_string(onnx_bytes).graph.node)
    # the recipe's ONNX runs (onnxruntime) through the same runtime API
    import edgemed_runtime as rt

    with rt.open(art.path, backend="onnxruntime") as s:
        assert s.predict(np.zeros((1, 16, 16), np.float32)).shape == (1, 2)


@pytest.mark.skipif(platform.machine() in ("aarch64", "arm64"), reason="host is ARM")
def test_mobile_target_records_coverage(tmp_path: Path, trained_tiny: Any, synthetic_dir: Path,
                                        spec16: Any) -> None:
    art = _build(tmp_path, trained_tiny, synthetic_dir, spec16, "mobile-android")
    assert art.format == "ort" and art.model_path.read_bytes()[4:8] == b"ORTM"
    assert art.backend_options["providers"] == ["xnnpack", "cpu"]  # NNAPI opt-in
    rec = next(r for r in art.provenance if r.get("pass") == "ort_format")
    assert rec["config"]["target_platform"] == "arm"
    cov = rec["mobile_coverage"]["nnapi"]
    assert cov["as_is"]["nodes"] > 0
    # batch fixed to 1: static shapes for NNAPI / Core ML, and the artifact says so
    assert cov["as_is"]["supported_nodes"] == cov["fixed_shapes"]["supported_nodes"]
    assert art.io.dynamic_batch is False and art.io.input_shape == (1, 1, 16, 16)
    import edgemed_runtime as rt

    with rt.open(art.path) as s:
        assert s.inputs[0].shape == (1, 1, 16, 16)
        assert s.predict(str(next(synthetic_dir.rglob("*.dcm")))).shape == (1, 2)
    sel = art.provenance[-1]
    assert sel["latency"] == "unmeasured" and sel["chosen"] == "ort-int8"
