"""A search trial's latency, measured on a node that carries the trial's target resource.

The trial's build runs where the search worker runs (any CPU machine); the ONNX files of the
candidate and of the FP32 reference are sent to a device node with ``target:<name>`` and timed
there interleaved (``edgemed_runtime.sdk.time_onnx``: runtime + onnxruntime only). The task asks
for one unit of the target resource, and an agent declares one per target by default, so two
timings never overlap on one device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime.sdk import resource_name, time_onnx

from ..errors import InvalidInputError
from .cluster import import_ray, require_target


def remote_latency(models: dict[str, str | os.PathLike[str]], x: np.ndarray, *, target: str,
                   threads: int = 1, runs: int = 20, wait_s: float = 60.0,
                   timeout_s: float = 900.0) -> tuple[dict[str, float], dict[str, Any]]:
    """Time ``models`` (name -> ONNX path) on a node with ``target``'s resource.

    Returns ``({name: p50 ms}, where)`` with ``where`` = ``latency_target``,
    ``latency_node_id``, ``latency_device_id``, ``latency_cpu``, ``latency_p99_ms``.
    Raises:
        InvalidInputError: no node with the resource joined within ``wait_s`` (code
            ``no-target-node``), or the measurement did not finish in ``timeout_s`` (code
            ``ray-timeout``).
    """
    ray = import_ray()
    require_target(target, wait_s=wait_s)
    blobs = {n: Path(p).read_bytes() for n, p in models.items()}
    fn = ray.remote(time_onnx).options(num_cpus=0, resources={resource_name(target): 1},
                                       max_retries=1)
    ref = fn.remote(blobs, np.ascontiguousarray(x), threads=threads, runs=runs)
    try:
        out = ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise InvalidInputError("the latency measurement did not finish",
                                expected=f"a free {resource_name(target)} node within "
                                f"{timeout_s:.0f} s", found="still queued or running",
                                fix="add devices for the target, or raise the timeout",
                                code="ray-timeout") from None
    dev = out["device"]
    where = {"latency_target": target, "latency_node_id": dev["node_id"],
             "latency_device_id": dev["device_id"], "latency_cpu": dev["cpu"],
             "latency_p99_ms": {n: v["p99_ms"] for n, v in out["latency"].items()}}
    return {n: v["p50_ms"] for n, v in out["latency"].items()}, where
