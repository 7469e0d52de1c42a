"""The machine a benchmark ran on (CPU model and flags, cores, library versions) and the CPU load
of *other* processes while it ran, so a reader can tell a slow result from a busy machine."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: libraries whose versions change benchmark results
LIBRARIES = ("edgemed", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "torch", "monai",
             "pydicom")
#: CPU flags that decide which kernels run (reported; the full list is hashed)
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
             "amx_int8", "amx_bf16", "neon", "asimddp", "i8mm", "sve")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "Hardware", "Model") and model in ("", platform.machine(),
                                                                       platform.processor()):
                model = val.strip()
            elif key in ("flags", "Features") and not flags:
                flags = val.split()
    except OSError:
        pass
    return model, flags


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries in LIBRARIES (absent ones are left out)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """CPU model, key flags (+ a hash of all flags), cores, memory, OS, Python, library versions."""
    import psutil

    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "arch": platform.machine(),
        "cpu_flags": sorted(set(flags) & set(KEY_FLAGS)),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def machine_key(threads: int) -> str:
    """A key naming this machine for caches: CPU model, all flags, cores, runtime versions, threads."""
    m = machine_info()
    libs = m["libraries"]
    blob = "|".join([m["cpu_model"], m["cpu_flags_sha256"], str(m["logical_cores"]),
                     libs.get("onnxruntime", ""), str(threads)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class LoadReport:
    """CPU use of other processes while we measured, in cores (1.0 = one core busy)."""

    seconds: float
    cores: int
    others_mean_cores: float
    others_max_cores: float
    steal_pct: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @property
    def busy(self) -> bool:
        """True when other processes used more than a quarter of a core on average."""
        return self.others_mean_cores > 0.25


def _busy_seconds(t: Any) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)  # namedtuple of floats
    # guest time is already counted in user on Linux
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - idle


class LoadMonitor:
    """Samples, every ``interval`` s, the system's busy CPU time minus our own process tree's.

    Use as a context manager around the measurement; ``report()`` afterwards.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._others: list[float] = []
        self._steal = 0.0
        self._t0 = 0.0
        self._t1 = 0.0
        self._known: dict[int, float] = {}

    def _tree_seconds(self) -> float:
        import psutil

        me = psutil.Process()
        procs = [me]
        try:
            procs += me.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                t = p.cpu_times()
                self._known[p.pid] = t.user + t.system
            except psutil.Error:
                continue  # exited: keep its last value
        return sum(self._known.values())

    def _run(self) -> None:
        import psutil

        sys0, own0 = psutil.cpu_times(), self._tree_seconds()
        first = sys0
        w0 = time.monotonic()
        cores = float(psutil.cpu_count() or 1)
        stopping = False
        while not stopping:
            # the last sample covers the time since the previous one, so a short run still
            # gets one sample even when the sampler thread was starved
            stopping = self._stop.wait(self.interval)
            sys1, own1, w1 = psutil.cpu_times(), self._tree_seconds(), time.monotonic()
            others = (_busy_seconds(sys1) - _busy_seconds(sys0)) - (own1 - own0)
            if w1 - w0 > 0.05 or (stopping and not self._others and w1 > w0):
                # tick granularity (10 ms) over short windows can overshoot: clamp to the machine
                self._others.append(min(cores, max(0.0, others / (w1 - w0))))
                sys0, own0, w0 = sys1, own1, w1
        last = psutil.cpu_times()
        total = sum(last) - sum(first)
        self._steal = 100.0 * (getattr(last, "steal", 0.0) - getattr(first, "steal", 0.0)) / total \
            if total > 0 else 0.0

    def __enter__(self) -> "LoadMonitor":
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="edgemed-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._t1 = time.monotonic()

    def report(self) -> LoadReport:
        import psutil

        o = self._others or [0.0]
        return LoadReport(seconds=self._t1 - self._t0, cores=psutil.cpu_count() or 1,
                          others_mean_cores=float(sum(o) / len(o)), others_max_cores=float(max(o)),
                          steal_pct=float(self._steal), samples=len(self._others))
