"""LiteRT backend: ``.tflite`` flatbuffers (full-INT8 or FP32) run by ``ai_edge_litert``.

``Interpreter(model_content=bytes)`` reads the model from memory (the bundle is decrypted in
memory; nothing is written to disk); the interpreter uses its built-in XNNPACK delegate on CPU.
No torch is needed. A model with integer input / output tensors (full-INT8 I/O) is fed by
quantizing the float input with the input tensor's scale and zero point, and its outputs are
dequantized the same way, so a session always takes and returns float32.

Threads: a LiteRT interpreter is not safe to share between threads, so a session keeps a pool
of interpreters made from the same bytes on first need, up to ``instances`` (default 1), each
used by one call at a time; ``threads`` sets each interpreter's ``num_threads``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import BackendError
from ..iospec import IOSpec
from .base import RUN_FIX, Backend, BackendSession, Pool, library_error


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """``x`` in the dtype of the tensor described by ``detail`` (quantized when integer)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero = detail.get("quantization", (0.0, 0))
    info = np.iinfo(dtype)
    q = np.round(x / (scale or 1.0)) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """``y`` as float32 (dequantized when it is an integer tensor)."""
    if y.dtype.kind == "f":
        return np.array(y, dtype=np.float32, copy=True)
    scale, zero = detail.get("quantization", (0.0, 0))
    return ((y.astype(np.float32) - zero) * (scale or 1.0)).astype(np.float32)


class _LiteRtSession(BackendSession):
    """A pool of LiteRT interpreters of one model."""

    def __init__(self, model: bytes, io: IOSpec, *, instances: int, threads: int) -> None:
        self._bytes = bytes(model)
        self._threads = threads
        self._pool: Pool[Any] | None = Pool(self._load, instances)
        with self._pool.use() as first:  # load once now: a bad model fails at open
            ins, outs = first.get_input_details(), first.get_output_details()
        if len(ins) != 1:
            raise BackendError("LiteRT model has more than one input", expected="1 input",
                               found=f"{len(ins)} inputs", code="model-load-failed")
        self.input_names = (io.input_name,)
        self.output_names = tuple(io.output_names[:len(outs)]) + tuple(
            f"output_{i}" for i in range(len(io.output_names), len(outs)))
        self.details = {"runtime": "litert", "instances": instances, "threads": threads,
                        "input_dtype": np.dtype(ins[0]["dtype"]).name,
                        "output_dtypes": [np.dtype(o["dtype"]).name for o in outs]}

    def _load(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=self._bytes, num_threads=self._threads or None)
        interp.allocate_tensors()
        return interp

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on ``feeds``; float32 outputs in ``output_names`` order.

        Raises:
            BackendError: the session is closed, or LiteRT refused the input.
        """
        pool = self._pool
        if pool is None:
            raise BackendError("the session is closed", code="closed")
        x = np.asarray(feeds[self.input_names[0]], np.float32)
        try:
            with pool.use() as interp:
                inp = interp.get_input_details()[0]
                if tuple(inp["shape"]) != x.shape:
                    interp.resize_tensor_input(inp["index"], list(x.shape))
                    interp.allocate_tensors()
                interp.set_tensor(inp["index"], _quantize(x, inp))
                interp.invoke()
                return [_dequantize(interp.get_tensor(o["index"]), o)
                        for o in interp.get_output_details()]
        except Exception as exc:  # LiteRT raises ValueError / RuntimeError
            raise library_error("LiteRT failed to run the model", exc, fix=RUN_FIX) from None

    def close(self) -> None:
        self._pool = None


class LiteRtBackend(Backend):
    """Runs ``tflite`` artifacts with LiteRT (``ai-edge-litert``), from memory."""

    name = "litert"
    formats = ("tflite",)
    requires = ("ai-edge-litert",)
    modules = ("ai_edge_litert",)
    extra = "litert"

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        """A session for ``.tflite`` bytes. Options: ``instances`` (interpreters run at once,
        default 1), ``threads`` (each interpreter's num_threads; 0 = LiteRT's default).

        Raises:
            BackendError(code="model-load-failed"): LiteRT refuses the model.
        """
        try:
            return _LiteRtSession(model, io, instances=int(options.get("instances", 1) or 1),
                                  threads=int(options.get("threads", 0) or 0))
        except BackendError:
            raise
        except Exception as exc:
            raise library_error("LiteRT cannot load the model", exc,
                                expected="a valid .tflite flatbuffer",
                                code="model-load-failed") from None
