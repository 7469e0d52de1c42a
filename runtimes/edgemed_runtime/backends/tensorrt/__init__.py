"""TensorRT backend: the engine is built on the device from a TensorRT recipe (QDQ or FP16 ONNX
plus builder settings), cached encrypted, and rebuilt when the GPU or TensorRT version changes.

A ``trt-plan-recipe`` artifact's model file is the ONNX the engine is built from, behind a
header holding the builder settings (``TrtRecipe``). Engines are hardware specific, so they are
never shipped: the first ``open`` on a device builds one (minutes for a large model) and, when
the caller gives ``engine_cache_key`` (the bundle layer passes a key derived from the bundle's
data key), stores it AES-256-GCM encrypted under ``engine_cache_dir``: one file per ONNX +
recipe (named by an HMAC), holding the TensorRT version and GPU (name, compute capability,
driver) it was built for, authenticated; after a TensorRT or GPU change the engine is rebuilt
and replaces the file. Without a key nothing is written to disk.

Precision: ``typing="strong"`` creates a STRONGLY_TYPED network (types come from the ONNX: QDQ ->
explicit INT8, an FP16 ONNX -> FP16; the only mode in TensorRT >= 11); ``typing="weak"``
(TensorRT 10) sets the INT8 builder flag for QDQ models plus FP16 for the layers left unquantized
(``fp16_fallback``).

Modules: ``recipe`` (the recipe file schema, shared with the SDK's ``tensorrt_recipe`` pass),
``cache`` (cache keys and the encrypted engine cache), ``engine`` (builder flags, optimization
profile, the build), ``cuda`` (CUDA runtime calls), ``session`` (running an engine), ``backend``
(``TensorRtBackend``). Only building and running need TensorRT and a GPU; every module imports
without them.
"""

from __future__ import annotations

from .backend import TensorRtBackend
from .cache import CACHE_MAGIC, EngineCache, GpuInfo, env_key, slot_key
from .cuda import gpu_info
from .engine import build_engine, builder_flags, network_flags, profile_shapes, trt_major
from .recipe import PRECISIONS, RECIPE_MAGIC, TYPINGS, TrtRecipe, pack_recipe, unpack_recipe

__all__ = [
    "CACHE_MAGIC", "EngineCache", "GpuInfo", "PRECISIONS", "RECIPE_MAGIC", "TYPINGS",
    "TensorRtBackend", "TrtRecipe", "build_engine", "builder_flags", "env_key", "gpu_info",
    "network_flags", "pack_recipe", "profile_shapes", "slot_key", "trt_major", "unpack_recipe",
]
