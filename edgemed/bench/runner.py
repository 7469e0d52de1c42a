"""``run_bench``: candidates -> fresh worker processes (cold and warm, interleaved) -> one result.

Every warm process times all candidates interleaved in blocks (a few untimed calls, then ``block``
timed calls of one candidate, then the next, rotating), so ratios come from side-by-side samples:
per-call alternation (A B A B) was measured here to slow the NNCF + OpenVINO DenseNet-121 from
~16 ms to 33-43 ms (each call finds the other models' weights in the caches and their threads
spinning), which squeezes every ratio toward 1; blocks of 10 matched each model timed alone;
several processes show how much a figure moves between processes (seen here: one INT8 model ran
at 17 ms in some processes and 28-30 ms in others). Ratios are per process, then summarised by
their median and spread across processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BackendError, InvalidInputError
from .candidates import Candidate
from .machine import LoadMonitor, machine_info
from .timing import LatencyStats, ratio

RESULT_VERSION = 1
#: raw samples kept per candidate in the JSON result (for the report's distributions)
MAX_SAMPLES = 3000


@dataclass(frozen=True)
class BenchConfig:
    """How to measure. Defaults suit a 2-core machine: about a minute per four candidates."""

    threads: int = 2
    runs: int = 60
    warmup: int = 10
    block: int = 10
    settle: int = 2
    processes: int = 5
    cold_processes: int = 2
    batch_sizes: tuple[int, ...] = (1,)
    timeout_s: float = 600.0
    seed: int = 0

    def check(self) -> None:
        for name in ("threads", "runs", "processes", "block"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be at least 1", expected="an integer >= 1",
                                        found=str(getattr(self, name)), fix=f"pass --{name} 1 or more",
                                        code="bad-option")
        if self.warmup < 0 or self.cold_processes < 0 or self.settle < 0:
            raise InvalidInputError("warmup and cold processes cannot be negative",
                                    expected="integers >= 0",
                                    found=f"warmup={self.warmup}, cold={self.cold_processes}",
                                    code="bad-option")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InvalidInputError("batch sizes must be positive", expected="e.g. 1,4,8",
                                    found=",".join(map(str, self.batch_sizes)), code="bad-option")


@dataclass
class Measurements:
    """Raw figures from the workers, before aggregation."""

    latency: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per process
    batch: dict[int, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    cold: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, str(Path(root) / "runtimes"),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_worker(spec: dict[str, Any], work: Path, tag: str, timeout: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    spec_path, out_path = work / f"{tag}.json", work / f"{tag}.npz"
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, "-m", "edgemed.bench.worker", str(spec_path),
                               str(out_path)], env=_worker_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError("a benchmark worker ran past its time limit",
                           expected=f"under {timeout:.0f} s", found=tag,
                           fix="lower --runs or --batch, or raise the timeout",
                           code="bench-timeout") from None
    if not out_path.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise BackendError("a benchmark worker process died", expected="a result file",
                           found=f"exit code {proc.returncode}: {' | '.join(tail)}"[:500],
                           fix="run the candidate alone (edgemed bench PATH) to see which backend "
                               "crashes", code="bench-worker-crashed")
    with np.load(out_path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    if not meta.get("ok"):
        raise BackendError("a benchmark worker failed", found=str(meta.get("error")),
                           code="bench-worker-failed")
    return meta, arrays


def measure(cands: list[Candidate], cfg: BenchConfig, *, sample_shape: tuple[int, ...],
            preprocess: dict[str, Any] | None, check: np.ndarray | None, dicom: Path | None,
            progress: Callable[[str], None] | None = None,
            in_run_ceiling: bool = False) -> Measurements:
    """Run the cold and warm worker processes for ``cands``; return the raw figures.

    ``in_run_ceiling``: also time the ceiling GEMMs (INT8 and FP32) interleaved with the
    candidates, so each candidate's fraction of the machine is a ratio from the same rounds.
    """
    say = progress or (lambda m: None)
    cfg.check()
    work = Path(tempfile.mkdtemp(prefix="edgemed-bench-run-"))
    m = Measurements()
    base = {"sample_shape": list(sample_shape), "preprocess": preprocess, "seed": cfg.seed,
            "runs": cfg.runs, "warmup": cfg.warmup, "batch_sizes": list(cfg.batch_sizes),
            "block": cfg.block, "settle": cfg.settle,
            "threads": cfg.threads}
    try:
        gemm: dict[str, str] = {}
        if in_run_ceiling:
            from .ceiling import INRUN_SHAPE, write_gemm_models

            gemm = write_gemm_models(work)
            base["gemm_shape"] = list(INRUN_SHAPE)
        if check is not None:
            np.save(work / "check.npy", check.astype(np.float32))
        for i in range(cfg.cold_processes):
            for c in cands:
                say(f"cold start {i + 1}/{cfg.cold_processes}: {c.name}")
                try:
                    meta, _ = _run_worker({**base, "mode": "cold", "candidates": [c.to_dict()]},
                                          work, f"cold-{i}-{len(m.cold)}", cfg.timeout_s)
                    m.cold.setdefault(c.name, []).append(meta)
                except BackendError as exc:
                    m.errors.setdefault(c.name, f"cold start: {exc.message}: {exc.found}")
        # a candidate whose cold process crashed or failed would take the shared warm ones down
        warm_cands = [c for c in cands if c.name not in m.errors]
        if not warm_cands:
            raise BackendError("no candidate could be opened", found="; ".join(
                f"{n}: {e}" for n, e in m.errors.items())[:500], code="bench-nothing-ran")
        for i in range(cfg.processes):
            say(f"warm process {i + 1}/{cfg.processes}: {len(warm_cands)} candidates "
                f"interleaved, {cfg.runs} rounds")
            spec = {**base, "mode": "warm", "rotate": i, "gemm": gemm,
                    "candidates": [c.to_dict() for c in warm_cands],
                    "dicom": str(dicom) if dicom else None,
                    "check_inputs": str(work / "check.npy") if (check is not None and i == 0) else None}
            meta, arrays = _run_worker(spec, work, f"warm-{i}", cfg.timeout_s)
            for n, e in meta.get("errors", {}).items():
                m.errors.setdefault(n, e)
            for b, skipped in meta.get("batch", {}).items():
                for n, why in skipped.items():
                    m.notes[f"batch {b} {n}"] = why
            m.rss_mb.append(float(meta.get("rss_mb", 0.0)))
            for key, arr in arrays.items():
                kind, _, name = key.partition("::")
                if kind == "lat":
                    m.latency.setdefault(name, []).append(arr)
                elif kind.startswith("batch"):
                    m.batch.setdefault(int(kind[5:]), {}).setdefault(name, []).append(arr)
                elif kind == "out":
                    m.outputs[name] = arr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def _spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    med = float(np.median(v))
    return {"median": round(med, 4), "min": round(float(v.min()), 4), "max": round(float(v.max()), 4),
            "spread_pct": round(100.0 * float(v.max() - v.min()) / med, 2) if med else 0.0,
            "per_process": [round(float(x), 4) for x in v]}


def summarize(cands: list[Candidate], m: Measurements, cfg: BenchConfig, *, baseline: str | None,
              ceilings: Any = None) -> dict[str, Any]:
    """Aggregate raw measurements into the JSON-ready per-candidate figures and ratios."""
    out: dict[str, Any] = {}
    names = [c.name for c in cands]
    base = baseline if baseline in m.latency else None
    ref_out = m.outputs.get(base) if base else None
    inrun = inrun_ceilings(m)
    for c in cands:
        d: dict[str, Any] = {"label": c.label, "role": c.role, "kind": c.kind, "path": c.path,
                             "precision": c.precision, "size_bytes": c.size_bytes,
                             "gmacs": c.gmacs}
        if c.name in m.errors:
            d["error"] = m.errors[c.name]
        per = m.latency.get(c.name)
        if per:
            pooled = np.concatenate(per)
            d["latency_ms"] = LatencyStats.from_samples(pooled).to_dict()
            d["samples_ms"] = [round(float(x) * 1e3, 3) for x in pooled[:MAX_SAMPLES]]
            d["process_p50_ms"] = _spread([float(np.median(s)) * 1e3 for s in per])
            d["throughput"] = {"1": round(1.0 / float(np.median(pooled)), 2)}
            for b, by in sorted(m.batch.items()):
                if c.name in by:
                    d["throughput"][str(b)] = round(b / float(np.median(np.concatenate(by[c.name]))), 2)
            if base and c.name != base:
                per_r = [float(np.median(a) / np.median(b)) for a, b in zip(per, m.latency[base])]
                r = ratio(pooled, np.concatenate(m.latency[base]))
                d["ratio_to_baseline"] = {**_spread(per_r), "ci95": [round(r.ci_low, 4),
                                                                     round(r.ci_high, 4)],
                                          "baseline": base}
            if c.gmacs and (ceilings is not None or inrun):
                achieved = c.gmacs / (float(np.median(pooled)))
                if inrun:  # same rounds, same load: per process, then the median
                    key = "int8" if c.precision == "int8" else "fp32"
                    fr = [c.gmacs / float(np.median(s)) / g for s, g in
                          zip(per, inrun[key]["per_process"])]
                    ceil, frac = inrun[key]["median"], float(np.median(fr))
                    src = "GEMM interleaved with the candidates in the same processes"
                else:
                    ceil = ceilings.for_precision(c.precision)
                    frac, src = achieved / ceil, "GEMM measured before the run (cached per machine)"
                d["efficiency"] = {"achieved_gmacs_per_s": round(achieved, 2),
                                   "ceiling_gmacs_per_s": round(ceil, 2),
                                   "fraction_of_ceiling": round(frac, 4), "ceiling_from": src}
            e2e = m.latency.get(f"{c.name} e2e")
            if e2e:
                e = float(np.median(np.concatenate(e2e))) * 1e3
                d["end_to_end_ms"] = LatencyStats.from_samples(np.concatenate(e2e)).to_dict()
                d["end_to_end_over_model"] = round(e / d["latency_ms"]["p50"], 3)
                d["end_to_end_samples_ms"] = [round(float(x) * 1e3, 3)
                                              for x in np.concatenate(e2e)[:MAX_SAMPLES]]
        cold = m.cold.get(c.name)
        if cold:
            d["cold"] = {k: _spread([x[k] for x in cold]) for k in
                         ("import_ms", "open_ms", "first_inference_ms", "peak_rss_mb",
                          "model_rss_mb")}
        if c.name in m.outputs and ref_out is not None and c.name != base:
            from ..evaluate import agreement

            o = m.outputs[c.name].reshape(len(ref_out), -1)
            d["agreement_with_baseline"] = {k: round(v, 5) for k, v in
                                            agreement(ref_out.reshape(len(ref_out), -1), o).items()}
        out[c.name] = d
    dec = m.latency.get("decode+preprocess")
    extra: dict[str, Any] = {"inrun_ceilings": inrun} if inrun else {}
    if dec:
        extra["decode+preprocess_ms"] = LatencyStats.from_samples(np.concatenate(dec)).to_dict()
    return {"candidates": out, "order": names, "baseline": base, **extra}


def inrun_ceilings(m: Measurements) -> dict[str, Any]:
    """GMAC/s of the GEMMs timed in the warm processes: per process (median time), and the
    median over processes; INT8 is the faster of MatMulInteger and QDQ MatMul."""
    from .ceiling import INRUN_SHAPE

    macs = float(np.prod(INRUN_SHAPE)) / 1e9
    per: dict[str, list[float]] = {}
    for kind in ("fp32", "matmulinteger", "qdq"):
        runs = m.latency.get(f"gemm::{kind}")
        if runs:
            per[kind] = [macs / float(np.median(s)) for s in runs]
    if "fp32" not in per or not ({"matmulinteger", "qdq"} & set(per)):
        return {}
    int8 = [max(v) for v in zip(*(per[k] for k in ("matmulinteger", "qdq") if k in per))]
    out = {k: _spread(v) for k, v in per.items()}
    out["int8"], out["fp32"] = _spread(int8), _spread(per["fp32"])
    out["shape"] = list(INRUN_SHAPE)
    return out


def speed_ratios(summary: dict[str, Any], reference: str, baseline: str) -> dict[str, Any] | None:
    """``reference``'s latency relative to ``baseline`` (per-process median ratio), if both ran."""
    c = summary["candidates"]
    if reference not in c or baseline not in c or "latency_ms" not in c[reference] \
            or "latency_ms" not in c[baseline]:
        return None
    a, b = c[reference]["process_p50_ms"]["per_process"], c[baseline]["process_p50_ms"]["per_process"]
    per = [x / y for x, y in zip(a, b)]
    return _spread(per)


def run_measurements(cands: list[Candidate], cfg: BenchConfig, **kw: Any) -> tuple[Measurements, dict[str, Any]]:
    """``measure`` under a LoadMonitor; returns the measurements and the load report."""
    t0 = time.perf_counter()
    with LoadMonitor() as mon:
        m = measure(cands, cfg, **kw)
    load = mon.report().to_dict()
    load["wall_s"] = round(time.perf_counter() - t0, 2)
    return m, load


def unique_names(cands: list[Candidate]) -> list[Candidate]:
    seen: dict[str, int] = {}
    out = []
    for c in cands:
        n = c.name
        if n in seen:
            seen[n] += 1
            c = replace(c, name=f"{n}-{seen[n]}")
        else:
            seen[n] = 1
        out.append(c)
    return out


def header() -> dict[str, Any]:
    return {"kind": "edgemed-bench", "version": RESULT_VERSION, "machine": machine_info(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
