"""Fleet benchmark: one bundle timed on every device of a target, one row per device.

``fleet_bench`` sends the (encrypted) bundle once to the object store, and schedules one task
per node that carries ``target:<name>``, pinned to that node (hard node affinity), each in a
fresh worker process (``max_calls=1``, so the peak RSS is that benchmark's). Each device
decrypts the bundle with its own key (``edgemed-run agent --device-key``) and returns its id,
CPU, runtime versions, p50/p99 and peak RSS: no inputs, outputs or patient data leave it.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime.sdk import atomic_write_bytes, bench_bundle, resource_name

from ..errors import InvalidInputError
from .cluster import import_ray, require_target

COLUMNS = ("device_id", "node_id", "cpu", "isa", "runtime", "backend", "p50_ms", "p99_ms",
           "peak_rss_mb", "error")


@dataclass
class FleetResult:
    """Rows (one per device) and the spread of p50 latency across the fleet."""

    target: str
    bundle: str
    rows: list[dict[str, Any]]
    spread: dict[str, Any]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "edgemed-fleet-bench", "target": self.target, "bundle": self.bundle,
                "rows": self.rows, "spread": self.spread, "seconds": round(self.seconds, 2),
                "settings": self.settings}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON document to ``path``; returns it."""
        p = Path(path)
        atomic_write_bytes(p, json.dumps(self.to_dict(), indent=2).encode())
        return p

    def html(self) -> str:
        """A self-contained HTML report: the rows and the spread."""
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>"
                                        for c in COLUMNS) + "</tr>" for r in self.rows)
        spread = "".join(f"<li>{html.escape(k)}: {html.escape(_cell(v))}</li>"
                         for k, v in self.spread.items())
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>fleet bench "
                f"{html.escape(self.target)}</title></head><body><h1>Fleet benchmark: "
                f"{html.escape(self.target)}</h1><p>bundle {html.escape(self.bundle)}, "
                f"{len(self.rows)} devices</p><table border='1'><tr>{head}</tr>{body}</table>"
                f"<h2>Spread across the fleet</h2><ul>{spread}</ul></body></html>")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return "" if v is None else str(v)


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """min / median / max p50 across the devices that measured, max/min and the CV."""
    p50 = np.asarray([r["p50_ms"] for r in rows if r.get("p50_ms") is not None], dtype=float)
    if not p50.size:
        return {"devices": 0}
    return {"devices": int(p50.size), "p50_min_ms": float(p50.min()),
            "p50_median_ms": float(np.median(p50)), "p50_max_ms": float(p50.max()),
            "max_over_min": float(p50.max() / p50.min()),
            "cv": float(p50.std() / p50.mean()) if p50.size > 1 else 0.0}


def _row(node: dict[str, Any], out: dict[str, Any] | None, err: str | None) -> dict[str, Any]:
    if out is None:
        return {"device_id": None, "node_id": node["node_id"], "error": err}
    dev = out["device"]
    return {"device_id": dev["device_id"], "node_id": dev["node_id"], "cpu": dev["cpu"],
            "isa": dev["isa"], "arch": dev["arch"], "versions": dev["versions"],
            "runtime": dev["versions"].get("edgemed-runtime"), "backend": out["backend"],
            "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"], "mean_ms": out["mean_ms"],
            "runs": out["runs"], "open_s": out["open_s"], "peak_rss_mb": out["peak_rss_mb"],
            "error": None}


def fleet_bench(bundle: str | os.PathLike[str], *, target: str, runs: int = 50,
                warmup: int = 5, threads: int | None = None, wait_s: float = 0.0,
                timeout_s: float = 900.0) -> FleetResult:
    """Benchmark ``bundle`` on every node carrying ``target:<target>`` (call ``connect`` first).

    Returns a FleetResult: one row per device (a device that failed has its ``error``: a typed
    error's code and message, never a traceback) and the spread of p50.
    Raises:
        InvalidInputError: the bundle is not a file (code ``not-found``), or no node carries the
            target (code ``no-target-node``).
    """
    ray = import_ray()
    p = Path(bundle)
    if not p.is_file():
        raise InvalidInputError("bundle not found", expected="a .edgemed bundle file",
                                found=str(p), code="not-found")
    t0 = time.perf_counter()
    nodes = require_target(target, wait_s=wait_s)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    blob = ray.put(p.read_bytes())
    fn = ray.remote(max_calls=1)(bench_bundle)
    refs = [fn.options(num_cpus=0, resources={resource_name(target): 1},
                       scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)
                       ).remote(blob, runs=runs, warmup=warmup, threads=threads) for n in nodes]
    rows = []
    for node, ref in zip(nodes, refs):
        try:
            rows.append(_row(node, ray.get(ref, timeout=timeout_s), None))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if hasattr(exc, "cause") else exc
            msg = getattr(cause, "code", None)
            rows.append(_row(node, None, f"{msg or type(cause).__name__}: "
                             f"{getattr(cause, 'message', '')}"[:300]))
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            rows.append(_row(node, None, f"ray-timeout: no result in {timeout_s:.0f} s"))
    return FleetResult(target=target, bundle=p.name, rows=rows, spread=spread(rows),
                       seconds=time.perf_counter() - t0,
                       settings={"runs": runs, "warmup": warmup, "threads": threads})
