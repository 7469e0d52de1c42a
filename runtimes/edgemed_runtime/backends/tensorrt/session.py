"""A TensorRT session: one deserialized engine run with device buffers through cuda-python."""

from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np

from ...errors import BackendError
from ..base import BackendSession
from .cuda import check, cudart


class TrtSession(BackendSession):
    """Runs a deserialized engine with device buffers managed through cuda-python.

    One execution context, stream and set of device buffers, used by one ``run`` at a time (a
    lock): an execution context is not thread-safe, and the engine's single optimization profile
    cannot be shared by several contexts running at once. The CUDA device is per thread, so every
    call selects ``device`` first.
    """

    def __init__(self, trt: Any, engine: Any, details: Mapping[str, Any], device: int = 0) -> None:
        self._trt = trt
        self._cudart = cudart()
        self._device = device
        self._engine = engine
        self._ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == mode)
        self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) != mode)
        self._stream = check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.details = dict(details)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Copy ``feeds`` (input order) to the GPU, execute, copy the outputs back (float32);
        calls from several threads take turns.

        Raises:
            BackendError: the session is closed, a shape outside the profile, or a CUDA /
                TensorRT failure.
        """
        with self._lock:
            if self._ctx is None:
                raise BackendError("the session is closed", code="closed")
            check(self._cudart.cudaSetDevice(self._device), "cudaSetDevice")
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """``run`` without the lock (the caller holds it)."""
        trt, cu = self._trt, self._cudart
        h2d = cu.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, value in zip(self.input_names, feeds.values()):
            x = np.ascontiguousarray(value, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            if not self._ctx.set_input_shape(name, x.shape):
                raise BackendError("input shape outside the engine's profile",
                                   found=str(x.shape), code="trt-shape",
                                   fix="rebuild with a recipe whose batch range covers it")
            ptr = self._buffer(name, x.nbytes)
            check(cu.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream), "memcpy")
            self._ctx.set_tensor_address(name, ptr)
        outs = []
        for name in self.output_names:
            shape = tuple(self._ctx.get_tensor_shape(name))
            out = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
            self._ctx.set_tensor_address(name, self._buffer(name, max(out.nbytes, 1)))
            outs.append(out)
        if not self._ctx.execute_async_v3(self._stream):
            raise BackendError("TensorRT execution failed", code="trt-run")
        for name, out in zip(self.output_names, outs):
            check(cu.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h,
                                      self._stream), "memcpy")
        check(cu.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [o.astype(np.float32, copy=False) for o in outs]

    def close(self) -> None:
        """Free the device buffers and the stream (after a ``run`` in progress ends)."""
        with self._lock:
            if self._buffers or self._stream is not None:
                self._cudart.cudaSetDevice(self._device)
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._buffers.clear()
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
                self._stream = None
            self._ctx = None
            self._engine = None
