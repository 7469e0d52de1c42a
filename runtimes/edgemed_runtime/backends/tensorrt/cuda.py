"""The CUDA runtime calls of the TensorRT backend, through cuda-python (imported on first use)."""

from __future__ import annotations

from typing import Any

from ...errors import BackendError
from .cache import GpuInfo


def cudart() -> Any:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before
    cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # type: ignore[no-redef]  # older cuda-python
    return runtime


def check(result: Any, what: str) -> Any:
    """The value(s) of a cuda-python call's ``(error, *values)`` result.

    Raises:
        BackendError(code="cuda-error"): the call did not return cudaSuccess.
    """
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess == 0
        raise BackendError(f"CUDA call failed: {what}", found=str(err), code="cuda-error",
                           fix="check the NVIDIA driver and that a GPU is visible (nvidia-smi)")
    return rest[0] if len(rest) == 1 else rest


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability and driver version of GPU ``device`` (needs cuda-python)."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    driver = check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name=name.strip("\0 "), compute_capability=f"{props.major}.{props.minor}",
                   driver=str(driver))
