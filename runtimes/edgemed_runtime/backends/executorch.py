"""ExecuTorch backend: ``.pte`` programs (XNNPACK-delegated INT8 or FP32), loaded from a buffer.

The program bytes go to ``_load_for_executorch_from_buffer`` (the bundle is decrypted in memory;
nothing is written to disk). ExecuTorch's Python runtime (``executorch`` 1.5.1 from pip) links
against libtorch and imports ``torch`` itself, so on a host this backend needs torch installed;
on Android the same ``.pte`` runs in ExecuTorch's C++ / Java runtime, which has no torch. This
module itself imports neither torch nor executorch at import time.

Threads: an ExecuTorch module is not safe to share between threads, so a session keeps a pool of
modules made from the same bytes on first need, up to ``instances`` (default 1), each used by one
call at a time. XNNPACK's thread pool is process-wide: ``threads`` (> 0) resets it once, on the
first open in the process (resetting it while another session runs is unsafe); later sessions
record the size they got in ``details``.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np

from ..errors import BackendError
from ..iospec import IOSpec
from .base import RUN_FIX, Backend, BackendSession, Pool, library_error

_THREADS_LOCK = threading.Lock()
_THREADS_SET = False


def _portable_lib() -> Any:
    """ExecuTorch's pybindings module (it imports torch first, as its wheel requires)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib

    return portable_lib


def _set_threads(lib: Any, threads: int) -> int:
    """Size XNNPACK's process-wide thread pool to ``threads`` (> 0) on the first call in the
    process only; return the pool's size."""
    global _THREADS_SET
    with _THREADS_LOCK:
        if threads > 0 and not _THREADS_SET:
            if int(lib._threadpool_get_thread_count()) != threads:
                lib._unsafe_reset_threadpool(threads)
            _THREADS_SET = True
        return int(lib._threadpool_get_thread_count())


class _EtSession(BackendSession):
    """A pool of ExecuTorch modules of one program; outputs copied out of the planned memory."""

    def __init__(self, lib: Any, model: bytes, io: IOSpec, *, instances: int,
                 threads: int) -> None:
        self._bytes = bytes(model)
        self._lib = lib
        self._pool: Pool[Any] | None = Pool(self._load, instances)
        with self._pool.use() as first:  # load once now: a bad program fails at open
            meta = first.method_meta("forward")
        self.input_names = (io.input_name,)
        n_out = int(meta.num_outputs())
        self.output_names = tuple(io.output_names[:n_out]) + tuple(
            f"output_{i}" for i in range(len(io.output_names), n_out))
        self.details = {"runtime": "executorch", "instances": instances,
                        "threadpool_threads": _set_threads(lib, threads),
                        "backends": list(lib._get_registered_backend_names())}

    def _load(self) -> Any:
        return self._lib._load_for_executorch_from_buffer(self._bytes)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``forward`` on ``feeds["input"]``; the outputs in ``output_names`` order.

        Raises:
            BackendError: the session is closed, or ExecuTorch refused the input.
        """
        import torch

        pool = self._pool
        if pool is None:
            raise BackendError("the session is closed", code="closed")
        x = torch.from_numpy(np.ascontiguousarray(feeds[self.input_names[0]], np.float32))
        try:
            with pool.use() as module:
                outs = module.forward((x,))
                return [np.array(o.numpy(), dtype=np.float32, copy=True) for o in outs]
        except Exception as exc:  # ExecuTorch raises RuntimeError with an error code
            raise library_error("ExecuTorch failed to run the program", exc, fix=RUN_FIX) from None

    def close(self) -> None:
        self._pool = None


class ExecuTorchBackend(Backend):
    """Runs ``pte`` artifacts with ExecuTorch's runtime (XNNPACK delegate, portable kernels)."""

    name = "executorch"
    formats = ("pte",)
    requires = ("executorch",)
    modules = ("executorch",)
    extra = "executorch"

    def open(self, model: bytes, io: IOSpec, options: Mapping[str, Any]) -> BackendSession:
        """A session for ``.pte`` bytes. Options: ``instances`` (modules run at once, default 1),
        ``threads`` (XNNPACK pool size, first open in the process only).

        Raises:
            BackendError(code="model-load-failed"): ExecuTorch refuses the program.
        """
        try:
            lib = _portable_lib()
            return _EtSession(lib, model, io, instances=int(options.get("instances", 1) or 1),
                              threads=int(options.get("threads", 0) or 0))
        except BackendError:
            raise
        except Exception as exc:
            raise library_error("ExecuTorch cannot load the program", exc,
                                expected="a valid ExecuTorch .pte program",
                                code="model-load-failed") from None
