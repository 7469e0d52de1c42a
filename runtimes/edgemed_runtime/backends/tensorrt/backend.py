"""The TensorRT backend: build the engine on the device from the recipe (or load it from the
encrypted cache) and run it."""

from __future__ import annotations

from typing import Any, Mapping

from ...errors import BackendError
from ...iospec import IOSpec
from ..base import Backend, BackendSession
from .cache import EngineCache, default_cache_dir, env_key, slot_key
from .cuda import check, cudart, gpu_info
from .engine import TrtLogger, build_engine
from .recipe import TrtRecipe, unpack_recipe
from .session import TrtSession


class TensorRtBackend(Backend):
    """Builds (or loads from the encrypted cache) and runs TensorRT engines on NVIDIA GPUs.

    Options: ``recipe`` (TrtRecipe fields), ``device`` (GPU index), ``engine_cache_dir`` and
    ``engine_cache_key`` (bytes; no disk cache without it).
    """

    name = "tensorrt"
    formats = ("trt-plan-recipe",)
    requires = ("tensorrt", "cuda-python")
    modules = ("tensorrt", "cuda")
    extra = "tensorrt"

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        """A session for a ``trt-plan-recipe`` model file; ``details["cache"]`` says whether the
        engine came from the cache (``hit``) or was built (``miss``, ``stale``, ``rejected``,
        ``no-cache``).

        Raises:
            InvalidInputError: not a recipe, or invalid recipe settings.
            BackendError: CUDA, the parser, the build or deserialization fails.
        """
        import tensorrt as trt

        base, model = unpack_recipe(model)
        recipe = TrtRecipe.from_options(options, base)
        device = int(options.get("device", 0) or 0)
        check(cudart().cudaSetDevice(device), "cudaSetDevice")
        slot, env = slot_key(model, recipe), env_key(trt.__version__, gpu_info(device))
        cache = None
        if options.get("engine_cache_key"):
            cache = EngineCache(options.get("engine_cache_dir") or default_cache_dir(),
                                options["engine_cache_key"])
        logger = TrtLogger(trt)
        plan = cache.load(slot, env) if cache is not None else None
        event = cache.last_event if cache is not None else "no-cache"
        if plan is None:
            plan = build_engine(trt, model, io, recipe, logger)
            if cache is not None:
                cache.store(slot, env, plan)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError("TensorRT cannot deserialize the engine",
                               found="; ".join(logger.messages[-3:])[:500], code="trt-load")
        return TrtSession(trt, engine, {"cache": event, "tensorrt": trt.__version__}, device)
