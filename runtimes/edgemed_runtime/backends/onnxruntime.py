"""onnxruntime backend: CPU EP (threads and graph optimisation from the target), CUDA/TensorRT EPs
when onnxruntime-gpu is present. Sessions are created from bytes and never write an optimised
model file to disk."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..errors import BackendError
from ..iospec import IOSpec
from .base import Backend, BackendSession

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(options: Mapping[str, Any]) -> Any:
    """Build ``ort.SessionOptions`` from backend options.

    Keys: ``threads`` (intra-op, 0 = library default), ``inter_threads``,
    ``graph_optimization`` (disable/basic/extended/all), ``sequential`` (bool).
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
    return so


def pick_providers(options: Mapping[str, Any]) -> list[str]:
    """The execution providers to use: the ones asked for that this build has, CPU last."""
    import onnxruntime as ort

    avail = set(ort.get_available_providers())
    wanted = list(options.get("providers", ["CPUExecutionProvider"]))
    chosen = [p for p in wanted if p in avail]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class _OrtSession(BackendSession):
    def __init__(self, sess: Any) -> None:
        self._sess = sess
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return list(self._sess.run(None, dict(feeds)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise BackendError(
                "onnxruntime failed to run the model", found=f"{type(exc).__name__}: {exc}"[:500],
                fix="check the input shape and dtype against session.inputs",
            ) from None

    def close(self) -> None:
        self._sess = None


class OnnxRuntimeBackend(Backend):
    """Runs ``onnx``, ``onnx-qdq`` and ``ort`` artifacts with onnxruntime."""

    name = "onnxruntime"
    formats = ("onnx", "onnx-qdq", "ort")
    requires = ("onnxruntime",)
    modules = ("onnxruntime",)

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(
                model, sess_options=session_options(options), providers=pick_providers(options)
            )
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                "onnxruntime cannot load the model", expected="a valid ONNX / ORT model",
                found=f"{type(exc).__name__}: {exc}"[:500], code="model-load-failed",
            ) from None
        return _OrtSession(sess)
