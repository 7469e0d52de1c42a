"""This machine's GEMM ceilings: a large matrix product through onnxruntime, INT8 and FP32.

INT8: ``MatMulInteger`` (uint8 x int8) and a QDQ ``MatMul`` (the form quantized models take); the
faster is the ceiling. FP32: ``MatMul``. Measured once per machine (CPU model, flags, cores,
onnxruntime version, threads) and cached as JSON; a model's achieved GMAC/s divided by the ceiling
of its precision tells how much of the machine it uses.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgemed_runtime.sdk import atomic_write_bytes

from .machine import machine_info, machine_key

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: GEMM shape (M, K, N): 4.3 GMAC, large enough to be compute-bound, small enough for ~1 s total
SHAPE = (1024, 2048, 2048)
#: other processes' mean load (in cores) above which a measured ceiling is not cached
BUSY_CORES = 0.5


def cache_dir() -> Path:
    """``$EDGEMED_CACHE`` or ``~/.cache/edgemed``."""
    env = os.environ.get("EDGEMED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgemed"


@dataclass(frozen=True)
class Ceilings:
    """GEMM throughput of this machine, GMAC/s (best of timed repeats), and the CPU load of other
    processes while it was measured (a busy machine's figure is not cached)."""

    int8_gmacs: float
    fp32_gmacs: float
    int8_matmulinteger_gmacs: float
    int8_qdq_gmacs: float
    threads: int
    shape: tuple[int, int, int]
    machine_key: str
    measured_at: str
    others_load_cores: float = 0.0
    cached: bool = False

    def for_precision(self, precision: str) -> float:
        return self.int8_gmacs if precision == "int8" else self.fp32_gmacs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _model(kind: str, m: int, k: int, n: int, rng: np.random.Generator) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    f, u8, i8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT32
    if kind == "fp32":
        w = rng.standard_normal((k, n)).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["a", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
        ins, outs = [helper.make_tensor_value_info("a", f, [m, k])], [("y", f)]
    elif kind == "matmulinteger":
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
        nodes = [helper.make_node("MatMulInteger", ["a", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
        ins, outs = [helper.make_tensor_value_info("a", u8, [m, k])], [("y", i8)]
    else:  # qdq: float in, u8 activations, s8 weights, float out
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
        sa, za = np.array(0.05, np.float32), np.array(128, np.uint8)
        sw, zw = np.array(0.01, np.float32), np.array(0, np.int8)
        inits = [numpy_helper.from_array(v, nm) for v, nm in
                 ((w, "wq"), (sa, "sa"), (za, "za"), (sw, "sw"), (zw, "zw"))]
        nodes = [
            helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["aq"]),
            helper.make_node("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
            helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
            helper.make_node("MatMul", ["ad", "wd"], ["y0"]),
            helper.make_node("QuantizeLinear", ["y0", "sa", "za"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "sa", "za"], ["y"]),
        ]
        ins, outs = [helper.make_tensor_value_info("a", f, [m, k])], [("y", f)]
    g = helper.make_graph(nodes, f"gemm_{kind}", ins,
                          [helper.make_tensor_value_info(o, t, [m, n]) for o, t in outs], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _gmacs(kind: str, threads: int, shape: tuple[int, int, int], reps: int) -> float:
    import onnxruntime as ort

    m, k, n = shape
    rng = np.random.default_rng(0)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(_model(kind, m, k, n, rng), so, providers=["CPUExecutionProvider"])
    a = (rng.integers(0, 256, (m, k), dtype=np.uint8) if kind == "matmulinteger"
         else rng.standard_normal((m, k)).astype(np.float32))
    for _ in range(2):
        sess.run(None, {"a": a})
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, {"a": a})
        times.append(time.perf_counter() - t0)
    # the best repeat: a ceiling is what the machine can do; load only ever slows a repeat down
    return float(m * k * n / min(times) / 1e9)


#: the GEMM timed inside every warm benchmark process, interleaved with the candidates
INRUN_SHAPE = (1024, 1024, 1024)
INRUN_KINDS = ("fp32", "matmulinteger", "qdq")


def write_gemm_models(folder: Path, shape: tuple[int, int, int] = INRUN_SHAPE) -> dict[str, str]:
    """Write the ceiling GEMMs as ONNX files (for the worker processes); ``{kind: path}``."""
    m, k, n = shape
    out = {}
    for kind in INRUN_KINDS:
        p = folder / f"gemm-{kind}.onnx"
        p.write_bytes(_model(kind, m, k, n, np.random.default_rng(0)))
        out[kind] = str(p)
    return out


def measure_ceilings(threads: int = 2, shape: tuple[int, int, int] | None = None, reps: int = 9) -> Ceilings:
    """Measure INT8 and FP32 GEMM throughput now (about 1-2 s on 2 cores)."""
    from .machine import LoadMonitor

    shape = shape or SHAPE
    with LoadMonitor(interval=0.25) as mon:
        fp32 = _gmacs("fp32", threads, shape, reps)
        mmi = _gmacs("matmulinteger", threads, shape, reps)
        qdq = _gmacs("qdq", threads, shape, reps)
    return Ceilings(int8_gmacs=max(mmi, qdq), fp32_gmacs=fp32, int8_matmulinteger_gmacs=mmi,
                    int8_qdq_gmacs=qdq, threads=threads, shape=tuple(shape),
                    machine_key=machine_key(threads),
                    measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    others_load_cores=round(mon.report().others_mean_cores, 3))


def get_ceilings(threads: int = 2, *, refresh: bool = False, cache: Path | None = None) -> Ceilings:
    """This machine's ceilings for ``threads``: from the cache, or measured and cached."""
    path = (cache or cache_dir()) / "ceilings.json"
    key = machine_key(threads)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
    if not refresh and key in data:
        d = dict(data[key])
        d.pop("machine", None)
        d["shape"] = tuple(d["shape"])
        d["cached"] = True
        try:
            return Ceilings(**d)
        except TypeError:
            pass  # an older cache layout: measure again
    c = measure_ceilings(threads)
    if c.others_load_cores > BUSY_CORES:
        return c  # measured on a busy machine: use it now, measure again next time
    data[key] = {**c.to_dict(), "machine": machine_info()["cpu_model"]}
    data[key].pop("cached", None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())
    except OSError:
        pass  # a read-only home: the figures are still returned
    return c
