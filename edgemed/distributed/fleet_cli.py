"""``edgemed bench --ray ADDRESS --target X BUNDLE``: the fleet table, JSON and HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemed_runtime.sdk import atomic_write_bytes

from ..errors import InvalidInputError
from .cluster import connect
from .fleet import FleetResult, fleet_bench


def render(result: FleetResult) -> None:
    """Print the fleet table (one row per device) and the spread."""
    from rich.table import Table

    from ..cli.common import console

    t = Table(title=f"fleet bench: {result.target} ({len(result.rows)} devices, "
              f"{result.seconds:.0f} s)")
    for c in ("device", "CPU", "runtime", "backend", "p50 ms", "p99 ms", "peak RSS MB", "error"):
        t.add_column(c)
    for r in result.rows:
        num = (lambda k: f"{r[k]:.3f}" if r.get(k) is not None else "")
        t.add_row(str(r.get("device_id") or r["node_id"][:12]), str(r.get("cpu") or ""),
                  str(r.get("runtime") or ""), str(r.get("backend") or ""), num("p50_ms"),
                  num("p99_ms"), num("peak_rss_mb"), str(r.get("error") or ""))
    console.print(t)
    s = result.spread
    if s.get("devices", 0):
        console.print(f"spread of p50: {s['p50_min_ms']:.3f} .. {s['p50_max_ms']:.3f} ms "
                      f"(max/min {s['max_over_min']:.2f}, CV {s['cv']:.3f})")


def run_fleet(source: str, *, ray: str, target: str | None, runs: int, warmup: int,
              threads: int | None, save: Path | None, html: Path | None,
              as_json: bool) -> FleetResult:
    """Join ``ray``, benchmark ``source`` on every ``target`` device, print and write reports.

    Raises:
        InvalidInputError: no --target (code ``needs-target``), no such node, no bundle file.
    """
    from ..cli.common import print_json

    if not target:
        raise InvalidInputError("a fleet benchmark needs the target whose devices run it",
                                expected="--target NAME", found="no --target",
                                code="needs-target")
    connect(ray)
    result = fleet_bench(source, target=target, runs=runs, warmup=warmup, threads=threads)
    if save is not None:
        result.save(save)
    if html is not None:
        atomic_write_bytes(Path(html), result.html().encode())
    doc: dict[str, Any] = result.to_dict()
    if as_json:
        print_json(doc)
    else:
        render(result)
    return result
