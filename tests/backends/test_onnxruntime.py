"""onnxruntime backend: FP32, QDQ INT8, FP16, ORT format (arm / amd64) and the ONNX inside a
TensorRT recipe, all through the shared template; plus its execution-provider settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgemed_runtime.backends.onnxruntime import pick_providers, provider_options

from .template import BackendContract

U8S8 = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True}
S8S8_SYM = {"activation_type": "int8", "weight_type": "int8", "per_channel": True,
            "symmetric_activations": True}


class TestOrtFp32(BackendContract):
    backend = "onnxruntime"
    chain: list = []
    expected_format = "onnx"
    max_abs_diff = 1e-4
    min_cosine = 0.99999


class TestOrtQdqU8S8(BackendContract):
    backend = "onnxruntime"
    chain = [("quantize_onnxruntime", U8S8)]
    expected_format = "onnx-qdq"


class TestOrtFp16(BackendContract):
    backend = "onnxruntime"
    chain = [("fp16", {})]
    expected_format = "onnx"
    max_abs_diff = 0.01

    def test_weights_are_fp16(self, artifact: Any) -> None:
        rec = artifact.provenance[-1]
        assert rec["pass"] == "fp16" and rec["fp16_initializers"] > 0


class TestOrtFormatArmInt8(BackendContract):
    backend = "onnxruntime"
    chain = [("quantize_onnxruntime", U8S8), ("ort_format", {"target_platform": "arm"})]
    expected_format = "ort"

    def test_model_is_ort_flatbuffer(self, artifact: Any) -> None:
        assert artifact.model_path.read_bytes()[4:8] == b"ORTM"

    def test_mobile_coverage_recorded(self, artifact: Any) -> None:
        cov = artifact.provenance[-1]["mobile_coverage"]
        for ep in ("nnapi", "coreml_mlprogram", "coreml_neuralnetwork"):
            for mode in ("as_is", "fixed_shapes"):
                c = cov[ep][mode]
                assert c["nodes"] > 0 and 0 <= c["supported_nodes"] <= c["nodes"]
                assert c["suitability"] in ("NO", "MAYBE", "YES")
        # the dynamic batch dimension costs coverage; fixed shapes never lower it
        assert cov["nnapi"]["fixed_shapes"]["supported_nodes"] >= \
            cov["nnapi"]["as_is"]["supported_nodes"]


class TestOrtFormatFixedBatch(BackendContract):
    """The mobile profiles' setting: batch fixed to 1 for NNAPI / Core ML static shapes."""

    backend = "onnxruntime"
    chain = [("quantize_onnxruntime", U8S8),
             ("ort_format", {"target_platform": "arm", "fix_batch": 1})]
    expected_format = "ort"

    def test_static_shapes_raise_nnapi_coverage(self, artifact: Any) -> None:
        cov = artifact.provenance[-1]["mobile_coverage"]["nnapi"]
        assert artifact.io.dynamic_batch is False
        assert cov["as_is"]["supported_nodes"] == cov["fixed_shapes"]["supported_nodes"]


class TestOrtFormatAmd64Fp32(BackendContract):
    backend = "onnxruntime"
    chain = [("ort_format", {"target_platform": "amd64", "coverage": False})]
    expected_format = "ort"
    max_abs_diff = 1e-4
    min_cosine = 0.99999


class TestOrtRunsTrtRecipe(BackendContract):
    """A TensorRT recipe's ONNX (symmetric S8S8 QDQ) gated with onnxruntime on a GPU-less host."""

    backend = "onnxruntime"
    chain = [("quantize_onnxruntime", S8S8_SYM), ("tensorrt_recipe", {})]
    expected_format = "trt-plan-recipe"


# -- execution providers -------------------------------------------------------------------------

def test_providers_aliases_order_and_cpu_last() -> None:
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert pick_providers({"providers": ["tensorrt", "cuda", "cpu"]}, avail) == avail
    assert pick_providers({"providers": ["cpu", "cuda"]}, avail) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # asked-for EPs this build lacks are skipped at run time: one profile serves every phone
    assert pick_providers({"providers": ["nnapi", "xnnpack", "cpu"]},
                          ["XnnpackExecutionProvider", "CPUExecutionProvider"]) == \
        ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    assert pick_providers({}, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_tensorrt_ep_never_writes_plaintext_engines() -> None:
    provs = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = provider_options(provs, {"precision": "int8", "device": 1})
    trt = opts[0]
    assert trt["trt_engine_cache_enable"] == "False" and trt["trt_timing_cache_enable"] == "False"
    assert trt["trt_int8_enable"] == "True" and trt["trt_fp16_enable"] == "True"
    assert trt["device_id"] == "1" and opts[1]["device_id"] == "1" and opts[2] == {}
    fp16 = provider_options(provs, {"precision": "fp16"})[0]
    assert fp16["trt_int8_enable"] == "False" and fp16["trt_fp16_enable"] == "True"


def test_mobile_ep_options() -> None:
    o = provider_options(["XnnpackExecutionProvider", "NnapiExecutionProvider",
                          "CoreMLExecutionProvider"], {"threads": 4})
    assert o[0] == {"intra_op_num_threads": "4"}
    assert o[1]["nnapi_flags"] == "NNAPI_FLAG_CPU_DISABLED"
    assert o[2]["ModelFormat"] == "MLProgram"


def test_cpu_session_reports_providers(run_chain: Any) -> None:
    from edgemed_runtime.api import open_artifact

    art = run_chain([])
    with open_artifact(art, options={"providers": ["cuda", "cpu"]}) as s:
        assert s.details["providers"][-1] == "CPUExecutionProvider"
        assert s.run({"input": np.zeros((1, 1, 16, 16), np.float32)})["logits"].shape == (1, 2)


def test_bad_graph_optimization_is_typed(run_chain: Any) -> None:
    from edgemed_runtime import BackendError
    from edgemed_runtime.api import open_artifact

    with pytest.raises(BackendError):
        open_artifact(run_chain([]), options={"graph_optimization": "fastest"})
