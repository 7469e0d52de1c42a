"""onnxruntime backend: CPU EP (threads and graph optimisation from the target), CUDA/TensorRT EPs
when onnxruntime-gpu is present. Sessions are created from bytes and never write an optimised
model file to disk."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendError
from ..iospec import IOSpec
from .base import RUN_FIX, Backend, BackendSession, library_error

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(options: Mapping[str, Any]) -> Any:
    """Build ``ort.SessionOptions`` from backend options.

    Keys: ``threads`` (intra-op, 0 = library default), ``inter_threads``,
    ``graph_optimization`` (disable/basic/extended/all), ``saved_runtime_optimizations`` (bool,
    for ORT-format files converted with the Runtime style).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("threads", 0) or 0)
    so.inter_op_num_threads = int(options.get("inter_threads", 1) or 1)
    level = str(options.get("graph_optimization", "all"))
    if level not in _OPT_LEVELS:
        raise BackendError("unknown graph_optimization", expected=", ".join(_OPT_LEVELS), found=level)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # never persist the (plaintext) optimised graph
    so.optimized_model_filepath = ""
    if options.get("saved_runtime_optimizations"):
        # ORT-format models converted with the "Runtime" style carry optimisations to replay
        so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return so


_EP_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
               "tensorrt": "TensorrtExecutionProvider", "nnapi": "NnapiExecutionProvider",
               "coreml": "CoreMLExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
               "openvino": "OpenVINOExecutionProvider"}


def wanted_providers(options: Mapping[str, Any]) -> list[str]:
    """The execution providers asked for in ``providers`` (default CPU), in the order asked,
    aliases such as ``cuda`` or ``nnapi`` resolved to onnxruntime's full names."""
    return [_EP_ALIASES.get(str(p).lower(), str(p))
            for p in options.get("providers", ["CPUExecutionProvider"])]


def pick_providers(options: Mapping[str, Any], available: list[str] | None = None) -> list[str]:
    """The execution providers to use: the ones asked for (``providers``, full names or
    aliases such as ``cuda``, ``tensorrt``, ``nnapi``, ``coreml``, ``xnnpack``) that this
    onnxruntime build has, in the order asked, CPU last. Chosen at run time, so one profile
    serves a phone with NNAPI and one without."""
    if available is None:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    avail = set(available)
    chosen = [p for p in dict.fromkeys(wanted_providers(options))
              if p in avail and p != "CPUExecutionProvider"]
    chosen.append("CPUExecutionProvider")
    return chosen


def provider_options(providers: list[str], options: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per-provider options, in ``providers`` order.

    TensorRT EP: INT8 / FP16 from ``precision`` (int8 implies FP16 fallback), and its engine and
    timing caches off (they would write plaintext engines to disk). CUDA EP: ``device``.
    XNNPACK: its own thread pool of ``threads``. NNAPI: ``nnapi_flags`` (e.g. NNAPI_FLAG_USE_FP16).
    CoreML: ``coreml_format`` (MLProgram default) and compute units. Values are strings, as
    onnxruntime wants them.
    """
    device = str(int(options.get("device", 0) or 0))
    precision = str(options.get("precision", "fp32")).lower()
    out: list[dict[str, str]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            out.append({"device_id": device,
                        "trt_int8_enable": str(precision == "int8"),
                        "trt_fp16_enable": str(precision in ("int8", "fp16")),
                        "trt_engine_cache_enable": "False", "trt_timing_cache_enable": "False",
                        "trt_dump_ep_context_model": "False"})
        elif p == "CUDAExecutionProvider":
            out.append({"device_id": device, "cudnn_conv_algo_search": "EXHAUSTIVE"})
        elif p == "XnnpackExecutionProvider":
            out.append({"intra_op_num_threads": str(int(options.get("threads", 0) or 0) or 1)})
        elif p == "NnapiExecutionProvider":
            out.append({"nnapi_flags": str(options.get("nnapi_flags", "NNAPI_FLAG_CPU_DISABLED"))})
        elif p == "CoreMLExecutionProvider":
            out.append({"ModelFormat": str(options.get("coreml_format", "MLProgram")),
                        "MLComputeUnits": str(options.get("coreml_compute_units", "ALL"))})
        else:
            out.append({})
    return out


class _OrtSession(BackendSession):
    """An ``ort.InferenceSession``; its ``run`` is thread-safe, so calls from several threads
    go straight through (no lock)."""

    def __init__(self, sess: Any) -> None:
        self._sess = sess
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())
        self.details = {"providers": list(sess.get_providers())}

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds``; the outputs in ``output_names`` order.

        Raises:
            BackendError: the session is closed, or onnxruntime refused the feeds.
        """
        sess = self._sess
        if sess is None:
            raise BackendError("the session is closed", code="closed")
        try:
            return list(sess.run(None, dict(feeds)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise library_error("onnxruntime failed to run the model", exc, fix=RUN_FIX) from None

    def close(self) -> None:
        self._sess = None


class OnnxRuntimeBackend(Backend):
    """Runs ``onnx``, ``onnx-qdq`` and ``ort`` artifacts with onnxruntime."""

    name = "onnxruntime"
    # trt-plan-recipe: the ONNX inside a TensorRT recipe, run as is (TensorRT EP when present)
    formats = ("onnx", "onnx-qdq", "ort", "trt-plan-recipe")
    requires = ("onnxruntime",)
    modules = ("onnxruntime",)
    #: ``open(..., external=)`` takes a split model's initializers from memory (bundle weights)
    accepts_external_weights = True

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any],
             external: Sequence[tuple[str, np.ndarray]] | None = None) -> BackendSession:
        """A session for ``model`` bytes. ``external``: ``(name, array)`` initializers the graph
        marks external, read in place (``add_external_initializers``, no copy); the caller keeps
        the arrays alive and unchanged while the session is open.

        Raises:
            BackendError(code="model-load-failed"): onnxruntime refuses the model or tensors.
        """
        import onnxruntime as ort

        from .tensorrt import RECIPE_MAGIC, unpack_recipe

        if model[: len(RECIPE_MAGIC)] == RECIPE_MAGIC:
            recipe, model = unpack_recipe(model)
            options = {"precision": recipe.get("precision", "int8"), **dict(options)}
        try:
            so = session_options(options)
            providers = pick_providers(options)
            if "XnnpackExecutionProvider" in providers:
                # XNNPACK has its own pool; ORT's would spin against it
                so.intra_op_num_threads = 1
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            values = [ort.OrtValue.ortvalue_from_numpy(a) for _, a in external or ()]
            if values:
                so.add_external_initializers([n for n, _ in external or ()], values)
            sess = ort.InferenceSession(model, sess_options=so, providers=providers,
                                        provider_options=provider_options(providers, options))
        except BackendError:
            raise
        except Exception as exc:
            raise library_error("onnxruntime cannot load the model", exc,
                                expected="a valid ONNX / ORT model",
                                code="model-load-failed") from None
        bs = _OrtSession(sess)
        bs.external_values = values  # onnxruntime reads them in place: keep them alive
        return bs
