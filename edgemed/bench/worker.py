"""The measuring process: ``python -m edgemed.bench.worker SPEC.json RESULT.npz``.

The parent starts several fresh workers so that a result is never one process's luck. Two modes:

* ``cold``: one candidate; times import, open (verify + decrypt + session creation for a bundle),
  the first inference, and records the process's peak RSS.
* ``warm``: every candidate in one process, timed interleaved in turns (``settle`` untimed then
  ``block`` timed calls of A, then of B, ..., rotating) at batch 1, then per batch size; the
  end-to-end path from a DICOM file beside model-only; outputs on check inputs.

Results go to an ``.npz`` (raw samples as arrays, a JSON summary under ``meta``); errors are
recorded per candidate, never raised, so one broken backend does not lose the others' numbers.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .candidates import Candidate, Runner, open_runner, preimport
from .timing import interleaved_samples


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM (ru_maxrss keeps the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _err(exc: BaseException) -> str:
    text = str(exc)
    msg = getattr(exc, "message", None) or (text.splitlines()[0] if text else "")
    return f"{type(exc).__name__}: {msg}"[:400]


def _input(spec: dict[str, Any], batch: int) -> np.ndarray:
    rng = np.random.default_rng(spec.get("seed", 0))
    shape = [batch, *spec["sample_shape"]]
    return rng.standard_normal(shape).astype(np.float32)


def _preprocess(spec: dict[str, Any]) -> Any:
    from edgemed_runtime import PreprocessSpec

    return PreprocessSpec.from_dict(spec["preprocess"]) if spec.get("preprocess") else None


def _gemm_call(kind: str, path: str, shape: list[int], threads: int) -> Any:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 0)
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = (rng.integers(0, 256, shape[:2], dtype=np.uint8) if kind == "matmulinteger"
         else rng.standard_normal(shape[:2]).astype(np.float32))
    return lambda: s.run(None, {"a": a})


def cold(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c = Candidate.from_dict(spec["candidates"][0])
    out: dict[str, Any] = {"name": c.name}
    t0 = time.perf_counter()
    preimport(c)
    out["import_ms"] = (time.perf_counter() - t0) * 1e3
    x = _input(spec, 1)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    r = open_runner(c, _preprocess(spec))
    out["open_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    r.run(x)
    out["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
    for _ in range(3):
        r.run(x)
    out["rss_after_open_mb"] = _rss_mb()
    out["peak_rss_mb"] = _peak_rss_mb()
    out["model_rss_mb"] = out["peak_rss_mb"] - rss0
    r.close()
    return out, {}


def warm(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    cands = [Candidate.from_dict(d) for d in spec["candidates"]]
    order = int(spec.get("rotate", 0)) % max(len(cands), 1)
    cands = cands[order:] + cands[:order]  # open order differs between processes
    pre = _preprocess(spec)
    runners: dict[str, Runner] = {}
    errors: dict[str, str] = {}
    for c in cands:
        try:
            preimport(c)
            runners[c.name] = open_runner(c, pre)
        except Exception as exc:  # a backend that cannot open is reported, not fatal
            errors[c.name] = _err(exc)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"errors": errors, "batch": {}, "e2e": {}}
    if not runners:
        return meta, arrays
    runs, warmup = int(spec["runs"]), int(spec["warmup"])
    x1 = _input(spec, 1)
    calls: dict[str, Any] = {n: (lambda r=r: r.run(x1)) for n, r in runners.items()}
    dicom = spec.get("dicom")
    if dicom:
        from edgemed_runtime.sdk import load_input

        by_name = {c.name: c for c in cands}
        for n, r in runners.items():
            if by_name[n].e2e and r.preprocess is not None:
                calls[f"{n} e2e"] = (lambda r=r: r.run(load_input(dicom, r.preprocess)[None]))
        first_pre = next((r.preprocess for r in runners.values() if r.preprocess is not None), None)
        if first_pre is not None:
            calls["decode+preprocess"] = lambda p=first_pre: load_input(dicom, p)
    gemm = spec.get("gemm") or {}
    for kind, path in gemm.items():  # the machine's ceiling, under the same load as the models
        calls[f"gemm::{kind}"] = _gemm_call(kind, path, spec["gemm_shape"], spec.get("threads", 0))
    block, settle = int(spec.get("block", 1)), int(spec.get("settle", 0))
    samples = interleaved_samples(calls, runs=runs, warmup=warmup, block=block, settle=settle)
    for n, s in samples.items():
        arrays[f"lat::{n}"] = s
    for b in spec.get("batch_sizes", []):
        if b == 1:
            continue
        xb = _input(spec, b)
        ok = {n: r for n, r in runners.items() if r.dynamic_batch}
        for n in set(runners) - set(ok):
            meta["batch"].setdefault(str(b), {})[n] = "skipped: the model has a fixed batch size"
        if not ok:
            continue
        nb = max(5, runs // b)
        sb = interleaved_samples({n: (lambda r=r, xb=xb: r.run(xb)) for n, r in ok.items()},
                                 runs=nb, warmup=max(1, warmup // b), block=min(block, nb),
                                 settle=min(settle, 1))
        for n, s in sb.items():
            arrays[f"batch{b}::{n}"] = s
    check = spec.get("check_inputs")
    if check:
        xs = np.load(check)
        for n, r in runners.items():
            try:
                arrays[f"out::{n}"] = np.concatenate([np.asarray(r.run(xs[i:i + 1]), np.float32)
                                                      for i in range(len(xs))])
            except Exception as exc:
                errors[n] = _err(exc)
    meta["rss_mb"] = _rss_mb()
    for r in runners.values():
        r.close()
    return meta, arrays


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(args[0]).read_text())
    result = Path(args[1])
    try:
        meta, arrays = cold(spec) if spec["mode"] == "cold" else warm(spec)
        meta["ok"] = True
    except Exception as exc:  # reported to the parent, which raises a typed error
        meta, arrays = {"ok": False, "error": _err(exc), "trace": traceback.format_exc()[-2000:]}, {}
    tmp = result.with_name(result.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, default=float)), **arrays)
    os.replace(tmp, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
