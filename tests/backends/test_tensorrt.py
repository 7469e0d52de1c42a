"""TensorRT backend. Without a GPU: recipe validation, network / builder flags per TensorRT
version, optimization profiles, cache keys, the encrypted engine cache and the recipe pass's
QDQ checks. With a GPU (``-m gpu``): the shared template plus engine caching, for real."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemed.errors import ExportError
from edgemed_runtime import BackendError, InvalidInputError
from edgemed_runtime.backends.tensorrt import (
    CACHE_MAGIC,
    EngineCache,
    GpuInfo,
    TensorRtBackend,
    TrtRecipe,
    builder_flags,
    env_key,
    network_flags,
    pack_recipe,
    profile_shapes,
    slot_key,
    trt_major,
    unpack_recipe,
)
from edgemed_runtime.iospec import IOSpec

from .template import BackendContract

S8S8_SYM = {"activation_type": "int8", "weight_type": "int8", "per_channel": True,
            "symmetric_activations": True}
GPU = GpuInfo("NVIDIA A2", "8.6", "12040")
KEY = bytes(range(32))


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install edgemed-runtime[tensorrt])"
    from edgemed.targets import nvidia_gpu

    ok, why = nvidia_gpu()
    return None if ok else why


# -- recipe -------------------------------------------------------------------------------------

def test_recipe_defaults_and_overrides() -> None:
    r = TrtRecipe.from_options({})
    assert (r.precision, r.typing, r.fp16_fallback, r.max_batch) == ("int8", "auto", True, 8)
    r = TrtRecipe.from_options({"recipe": {"max_batch": 4}}, base={"precision": "fp16"})
    assert (r.precision, r.max_batch) == ("fp16", 4)


@pytest.mark.parametrize("bad", [{"precision": "int4"}, {"typing": "loose"},
                                 {"min_batch": 4, "opt_batch": 2}, {"workspace_mb": 1},
                                 {"optimization_level": 9}, {"max_batch": "many"},
                                 {"unknown_knob": 1}])
def test_recipe_rejects_bad_settings(bad: dict) -> None:
    with pytest.raises(InvalidInputError):
        TrtRecipe.from_options({"recipe": bad})


def test_recipe_file_round_trip() -> None:
    blob = pack_recipe(TrtRecipe(precision="fp16", max_batch=2), b"onnx-bytes")
    meta, onnx = unpack_recipe(blob)
    assert onnx == b"onnx-bytes" and meta["precision"] == "fp16" and meta["max_batch"] == 2
    with pytest.raises(InvalidInputError):
        unpack_recipe(b"\x08\x07onnx")


def test_recipe_pass_config_is_the_recipe_schema() -> None:
    """One schema: the pass's settings are TrtRecipe's fields and defaults (but the precision,
    read from the model), refused by TrtRecipe's own checks."""
    from edgemed.passes.tensorrt import TensorRtRecipeConfig

    assert tuple(TensorRtRecipeConfig.model_fields) == tuple(
        n for n in TrtRecipe.field_names() if n != "precision")
    assert TensorRtRecipeConfig().recipe("int8") == TrtRecipe()
    for bad in ({"typing": "loose"}, {"min_batch": 4, "opt_batch": 2}, {"workspace_mb": 1},
                {"optimization_level": 9}, {"unknown_knob": 1}):
        with pytest.raises(ValueError):
            TensorRtRecipeConfig(**bad)


# -- builder configuration ----------------------------------------------------------------------

def test_flags_tensorrt_10_explicit_int8_with_fp16_fallback() -> None:
    r = TrtRecipe(precision="int8", typing="auto", fp16_fallback=True)
    assert network_flags(r, 10) == []
    assert builder_flags(r, 10) == ["INT8", "FP16"]
    no_fallback = TrtRecipe(precision="int8", typing="weak", fp16_fallback=False)
    assert builder_flags(no_fallback, 10) == ["INT8"]
    assert builder_flags(TrtRecipe(precision="fp16", typing="weak"), 10) == ["FP16"]
    assert builder_flags(TrtRecipe(precision="fp32", typing="weak"), 10) == []


def test_flags_strongly_typed() -> None:
    r = TrtRecipe(precision="fp16", typing="strong")
    for major in (10, 11):
        assert network_flags(r, major) == ["STRONGLY_TYPED"] and builder_flags(r, major) == []
    # auto on TensorRT 11: strong typing, no precision flags (they no longer exist)
    auto = TrtRecipe(typing="auto")
    assert network_flags(auto, 11) == ["STRONGLY_TYPED"] and builder_flags(auto, 11) == []


def test_weak_typing_refused_on_tensorrt_11() -> None:
    with pytest.raises(BackendError) as e:
        builder_flags(TrtRecipe(typing="weak"), 11)
    assert e.value.code == "trt-weak-typing"


def test_version_parsing() -> None:
    assert trt_major("10.7.0.23") == 10 and trt_major("11.0") == 11 and trt_major("dev") == 0


def test_optimization_profile_shapes() -> None:
    r = TrtRecipe(min_batch=1, opt_batch=2, max_batch=8)
    dyn = profile_shapes(r, IOSpec(input_shape=(1, 1, 224, 224)))
    assert dyn == {"input": ((1, 1, 224, 224), (2, 1, 224, 224), (8, 1, 224, 224))}
    fixed = profile_shapes(r, IOSpec(input_shape=(4, 1, 64, 64), dynamic_batch=False))
    assert fixed["input"] == ((4, 1, 64, 64),) * 3


# -- cache keys and the encrypted cache -----------------------------------------------------------

def test_keys_change_with_what_the_engine_depends_on() -> None:
    slot, env = slot_key(b"model", TrtRecipe()), env_key("10.7.0", GPU)
    assert slot == slot_key(b"model", TrtRecipe()) and env == env_key("10.7.0", GPU)
    assert len({slot, slot_key(b"model2", TrtRecipe()),
                slot_key(b"model", TrtRecipe(max_batch=4))}) == 3
    envs = {env, env_key("10.8.0", GPU), env_key("10.7.0", GpuInfo("NVIDIA A2", "8.6", "12050")),
            env_key("10.7.0", GpuInfo("Orin (nvgpu)", "8.7", "12040"))}
    assert len(envs) == 4


SLOT, ENV = slot_key(b"model", TrtRecipe()), env_key("10.7.0", GPU)


def test_engine_cache_round_trip_encrypted(tmp_path: Path) -> None:
    plan = b"serialized-engine-" * 100
    cache = EngineCache(tmp_path, KEY)
    assert cache.load(SLOT, ENV) is None and cache.last_event == "miss"
    p = cache.store(SLOT, ENV, plan)
    raw = p.read_bytes()
    assert raw.startswith(CACHE_MAGIC) and plan[:16] not in raw  # ciphertext, not the plan
    assert SLOT not in p.name  # the name does not identify the model
    again = EngineCache(tmp_path, KEY)
    assert again.load(SLOT, ENV) == plan and again.last_event == "hit"
    assert [f.name for f in tmp_path.iterdir()] == [p.name]  # no temp file left behind


def test_new_tensorrt_or_gpu_rebuilds_and_replaces(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, KEY)
    p = cache.store(SLOT, ENV, b"engine-for-10.7")
    for env in (env_key("10.8.0", GPU), env_key("10.7.0", GpuInfo("NVIDIA L4", "8.9", "12040"))):
        assert cache.load(SLOT, env) is None and cache.last_event == "stale"
    new_env = env_key("10.8.0", GPU)
    assert cache.store(SLOT, new_env, b"engine-for-10.8") == p  # same file, replaced
    assert cache.load(SLOT, new_env) == b"engine-for-10.8"
    assert cache.load(SLOT, ENV) is None and cache.last_event == "stale"
    assert len(list(tmp_path.iterdir())) == 1


def test_engine_cache_rejects_tampered_or_foreign_files(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, KEY)
    p = cache.store(SLOT, ENV, b"engine")
    blob = bytearray(p.read_bytes())
    blob[-1] ^= 1
    p.write_bytes(bytes(blob))
    assert cache.load(SLOT, ENV) is None and cache.last_event == "rejected" and not p.exists()
    # written with another key, moved to the name this key expects: authenticates nowhere
    cache.store(SLOT, ENV, b"engine")
    other = EngineCache(tmp_path, bytes(32))
    p.rename(other.path_for(SLOT))
    assert other.load(SLOT, ENV) is None and other.last_event == "rejected"
    # another model's engine moved to this model's slot: the slot is authenticated too
    q = cache.store(slot_key(b"other", TrtRecipe()), ENV, b"other-engine")
    q.rename(cache.path_for(SLOT))
    assert cache.load(SLOT, ENV) is None and cache.last_event == "rejected"


def test_engine_cache_key_too_short() -> None:
    with pytest.raises(InvalidInputError):
        EngineCache("/tmp", b"short")


def test_backend_without_cuda_bindings_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``tensorrt`` importable but not ``cuda``, whatever is installed here: unavailable,
    and the error names the pip package to install (cuda-python, not the module name)."""
    from importlib.machinery import ModuleSpec

    from edgemed_runtime import MissingDependencyError
    from edgemed_runtime.artifact import FORMATS

    assert set(TensorRtBackend.formats) <= set(FORMATS)
    fake = {"tensorrt": ModuleSpec("tensorrt", None), "cuda": None}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: (
        fake[name] if name in fake else real(name, package)))
    assert not TensorRtBackend.is_available()
    with pytest.raises(MissingDependencyError) as e:
        TensorRtBackend.ensure_available()
    assert e.value.code == "missing-dependency" and e.value.fix == "pip install 'edgemed-runtime[tensorrt]'"


# -- the recipe pass ---------------------------------------------------------------------------

def test_recipe_pass_accepts_symmetric_int8(run_chain: Any) -> None:
    art = run_chain([("quantize_onnxruntime", S8S8_SYM), ("tensorrt_recipe", {"max_batch": 4})])
    assert art.format == "trt-plan-recipe"
    meta, onnx_bytes = unpack_recipe(art.model_path.read_bytes())
    assert meta["precision"] == "int8" and meta["max_batch"] == 4
    rec = art.provenance[-1]
    assert rec["recipe"]["typing"] == "auto" and "parser" in rec
    # onnxruntime's int32 bias DequantizeLinear nodes (TensorRT has no int32 dequantization)
    # are folded to float32 constants; no 8-bit Q/DQ is touched
    import onnx
    from onnx import TensorProto

    from edgemed.passes.tensorrt import qdq_problems

    qdq = onnx.load(str(run_chain([("quantize_onnxruntime", S8S8_SYM)]).model_path))
    m = onnx.load_from_string(onnx_bytes)
    inits = {t.name: t.data_type for t in m.graph.initializer}
    assert rec["int32_bias_folded"] > 0
    assert not [n for n in m.graph.node if n.op_type == "DequantizeLinear"
                and inits.get(n.input[0]) == TensorProto.INT32]
    count = lambda g, op: sum(n.op_type == op for n in g.graph.node)  # noqa: E731
    assert count(m, "QuantizeLinear") == count(qdq, "QuantizeLinear")
    assert qdq_problems(m) == []


def test_recipe_pass_refuses_asymmetric_uint8(run_chain: Any) -> None:
    with pytest.raises(ExportError) as e:
        run_chain([("quantize_onnxruntime", {"activation_type": "uint8", "weight_type": "int8"}),
                   ("tensorrt_recipe", {})])
    assert e.value.code == "trt-qdq" and "symmetric_activations" in (e.value.fix or "")


def test_recipe_pass_detects_fp16(run_chain: Any) -> None:
    art = run_chain([("fp16", {}), ("tensorrt_recipe", {"typing": "strong"})])
    meta, _ = unpack_recipe(art.model_path.read_bytes())
    assert meta["precision"] == "fp16" and meta["typing"] == "strong"


# -- on a GPU -----------------------------------------------------------------------------------

_NO_GPU = _gpu_reason()


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs an NVIDIA GPU with TensorRT: {_NO_GPU}")
class TestTensorRtInt8(BackendContract):
    backend = "tensorrt"
    chain = [("quantize_onnxruntime", S8S8_SYM), ("tensorrt_recipe", {})]
    expected_format = "trt-plan-recipe"

    def test_engine_cached_encrypted_and_reused(self, artifact: Any, tmp_path: Path) -> None:
        from edgemed_runtime.api import open_artifact

        opts = {"engine_cache_key": KEY, "engine_cache_dir": str(tmp_path)}
        with open_artifact(artifact, options=opts) as s1:
            assert s1.details["cache"] == "miss"
            out1 = s1.run({"input": np.zeros((2, 1, 16, 16), np.float32)})["logits"]
        files = list(tmp_path.iterdir())
        assert len(files) == 1 and files[0].read_bytes().startswith(CACHE_MAGIC)
        with open_artifact(artifact, options=opts) as s2:
            assert s2.details["cache"] == "hit"
            out2 = s2.run({"input": np.zeros((2, 1, 16, 16), np.float32)})["logits"]
        np.testing.assert_allclose(out1, out2, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(_NO_GPU is not None, reason=f"needs an NVIDIA GPU with TensorRT: {_NO_GPU}")
class TestTensorRtFp16(BackendContract):
    backend = "tensorrt"
    chain = [("fp16", {}), ("tensorrt_recipe", {"typing": "strong"})]
    expected_format = "trt-plan-recipe"
    max_abs_diff = 0.01
