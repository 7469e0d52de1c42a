"""``edgemed bench``: time an artifact, bundle or model against its peers on this machine."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .common import console, err_console, handle_errors, print_json


def _ints(text: str, what: str) -> tuple[int, ...]:
    from edgemed.errors import InvalidInputError

    try:
        vals = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        raise InvalidInputError(f"cannot parse {what}", expected="integers such as 1,4,8",
                                found=text, code="bad-option") from None
    if not vals:
        raise InvalidInputError(f"{what} is empty", expected="integers such as 1,4,8",
                                found=repr(text), code="bad-option")
    return vals


def _fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def render(data: dict[str, Any]) -> None:
    """Print the result as rich tables (latency, cold start, ratios, efficiency, load, budget)."""
    from rich.table import Table

    out = console
    c = data["candidates"]
    cfg = data.get("config", {})
    t = Table(title=f"Warm latency, batch 1 (ms; {cfg.get('processes')} fresh processes pooled; "
                    f"interleaved in turns of {cfg.get('block')} calls)")
    for col in ("candidate", "p50", "p90", "p99", "mean", "std", "p50 per process", "spread %",
                "throughput /s"):
        t.add_column(col, justify="left" if col == "candidate" else "right")
    for n in data["order"]:
        d = c[n]
        if "latency_ms" not in d:
            continue
        lat, pp = d["latency_ms"], d["process_p50_ms"]
        thr = ", ".join(f"b{b}: {v:.1f}" for b, v in d["throughput"].items())
        t.add_row(n, *(_fmt(lat[k]) for k in ("p50", "p90", "p99", "mean", "std")),
                  " / ".join(f"{x:.1f}" for x in pp["per_process"]), _fmt(pp["spread_pct"], 1), thr)
    out.print(t)
    t = Table(title="Cold start and memory (fresh process per run; medians)")
    for col in ("candidate", "import ms", "open ms", "first inference ms", "peak RSS MB",
                "model RSS MB", "size MB"):
        t.add_column(col, justify="left" if col == "candidate" else "right")
    for n in data["order"]:
        d = c[n]
        cold = d.get("cold", {})
        med = {k: v["median"] for k, v in cold.items()}
        t.add_row(n, *(_fmt(med.get(k), 1) for k in ("import_ms", "open_ms", "first_inference_ms",
                                                    "peak_rss_mb", "model_rss_mb")),
                  _fmt(d["size_bytes"] / 2**20 if d.get("size_bytes") else None, 2))
    out.print(t)
    rows = data.get("ratio_table", [])
    if rows:
        t = Table(title="Ratios (latency p50, per process then median; [min-max over processes])")
        cols = [("name", "candidate"), ("vs_fp32", "x ORT FP32"), ("vs_best_peer", "x best peer"),
                ("vs_edgemed", "x edgemed"), ("size_vs_fp32", "size x FP32"),
                ("top1_agreement", "top-1 agree"), ("fraction_of_ceiling", "of GEMM ceiling")]
        for _, title in cols:
            t.add_column(title, justify="left" if title == "candidate" else "right")
        for r in rows:
            cells = []
            for key, _ in cols:
                v = r.get(key)
                if key.startswith("vs_") and v is not None:
                    lo, hi = r[key + "_range"]
                    cells.append(f"{v:.3f} [{lo:.2f}-{hi:.2f}]")
                elif key == "fraction_of_ceiling" and v is not None:
                    cells.append(f"{100 * v:.0f}%")
                else:
                    cells.append(_fmt(v, 3))
            t.add_row(*cells)
        out.print(t)
    e = c.get("edgemed", {})
    if "end_to_end_ms" in e:
        dec = data.get("decode+preprocess_ms", {}).get("p50")
        out.print(f"End to end from DICOM (decode + preprocess + inference): "
                      f"p50 {e['end_to_end_ms']['p50']:.2f} ms = {e['end_to_end_over_model']:.2f}x "
                      f"model-only {e['latency_ms']['p50']:.2f} ms (decode + preprocess alone "
                      f"{_fmt(dec)} ms; {data['data']['dicom']})")
    ir = data.get("inrun_ceilings")
    if ir:
        out.print(f"GEMM ceilings in the same rounds ({'x'.join(map(str, ir['shape']))}): INT8 "
                  f"{ir['int8']['median']:.0f} GMAC/s, FP32 {ir['fp32']['median']:.0f} GMAC/s "
                  "(fractions of the ceiling use these)")
    ceil = data.get("ceilings")
    if ceil:
        out.print(f"GEMM ceilings alone ({ceil['threads']} threads{', cached' if ceil.get('cached') else ''}): "
                      f"INT8 {ceil['int8_gmacs']:.0f} GMAC/s, FP32 {ceil['fp32_gmacs']:.0f} GMAC/s")
    load = data["load"]
    style = "yellow" if load["others_mean_cores"] > 0.25 else "green"
    out.print(f"[{style}]Other processes used {load['others_mean_cores']:.2f} of "
                  f"{load['cores']} cores on average (max {load['others_max_cores']:.2f}, steal "
                  f"{load['steal_pct']:.1f}%) during the {load['wall_s']:.0f} s run.[/]")
    for n in data["order"]:
        if "error" in c[n]:
            out.print(f"[red]{n} failed: {c[n]['error']}[/]")
    for k, v in {**data.get("skipped", {})}.items():
        out.print(f"[dim]skipped {k}: {v}[/]")
    b = data.get("budget", {})
    if b.get("checked"):
        src = b.get("source", f"target profile {b.get('target')}")
        how = "enforced" if b.get("enforced") else "not enforced (pass --enforce-budget)"
        if b["exceeded"]:
            out.print(f"[bold red]Budget exceeded[/] ({src}; {how}): " + "; ".join(b["reasons"]))
        else:
            out.print(f"[green]Within the budget[/] ({src}; {how}).")


def budget_verdict(data: dict[str, Any], budget_ms: float | None,
                   enforce: bool) -> dict[str, Any]:
    """The budget section with where the budget came from (``source``) and whether it is
    ``enforced``: ``budget_ms`` (the user's, always enforced) replaces the profile's latency
    budget; the profile's budget is enforced only with ``enforce``."""
    b = dict(data.get("budget") or {})
    if budget_ms is None:
        if b.get("checked"):
            b["source"] = f"target profile {b.get('target')} [budget]"
        b["enforced"] = bool(enforce and b.get("checked"))
        return b
    lat = (data.get("candidates", {}).get("edgemed", {}).get("latency_ms") or {}).get("p50")
    over = lat is not None and lat > budget_ms
    return {"checked": lat is not None, "target": b.get("target"), "source": "--budget-ms",
            "enforced": True, "exceeded": over,
            "latency_ms": {"budget": budget_ms, "measured_p50": lat},
            "reasons": [f"p50 latency {lat:.2f} ms > budget {budget_ms} ms"] if over else []}


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        source: str = typer.Argument(..., help="Artifact dir, bundle, .onnx, or a model spec "
                                     "('monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2')."),
        peers: bool = typer.Option(False, "--peers", help="Add ORT FP32, ORT quantize_static and "
                                   "NNCF+OpenVINO, all with their defaults."),
        backend: list[str] = typer.Option([], "--backend", "-b", help="Also run on this backend (repeat)."),
        compare: list[Path] = typer.Option([], "--with", help="Another artifact/bundle/.onnx to time "
                                           "in the same processes (repeat)."),
        batch: str = typer.Option("1", "--batch", help="Batch sizes, e.g. 1,4,8."),
        threads: int = typer.Option(2, "--threads"),
        runs: int = typer.Option(60, "--runs", help="Timed calls per candidate per process."),
        warmup: int = typer.Option(10, "--warmup"),
        block: int = typer.Option(10, "--block", help="Timed calls per turn (A x block, B x block, "
                                  "...); 1 = strict A B A B."),
        settle: int = typer.Option(2, "--settle", help="Untimed calls at the start of each turn."),
        processes: int = typer.Option(5, "--processes", help="Fresh processes for warm timing."),
        cold: int = typer.Option(2, "--cold", help="Fresh processes per candidate for cold start."),
        target: Optional[str] = typer.Option(None, "--target", help="Profile whose budgets are "
                                             "reported (enforced only with --enforce-budget)."),
        budget_ms: Optional[float] = typer.Option(None, "--budget-ms", min=0.0, help="Latency "
                                                  "budget (p50, ms) to enforce: exit 3 when "
                                                  "exceeded."),
        enforce_budget: bool = typer.Option(False, "--enforce-budget", help="Exit 3 when the "
                                            "target profile's latency or memory budget is "
                                            "exceeded (default: report it only)."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="DICOM folder or .npy (default: "
                                             "synthetic CT)."),
        dicom: str = typer.Option("synthetic", "--dicom", help="DICOM file for the end-to-end "
                                  "figure; 'none' to skip."),
        reference: Optional[Path] = typer.Option(None, "--reference", help="FP32 ONNX (bundles)."),
        trust: Optional[Path] = typer.Option(None, "--trust", help="Publisher key (bundles)."),
        device_key: Optional[Path] = typer.Option(None, "--device-key", help="Device key (bundles)."),
        input_shape: str = typer.Option("1x1x224x224", "--input", help="Input shape for a model spec."),
        save: Optional[Path] = typer.Option(None, "--save", help="Write the JSON result here."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON "
                                     "document on stdout (progress goes to stderr)."),
        no_ceilings: bool = typer.Option(False, "--no-ceilings", help="Skip the GEMM ceilings."),
        ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster (host:port | auto): "
                                          "time the bundle on every device carrying --target "
                                          "(one row per device, docs/ray.md)."),
        html: Optional[Path] = typer.Option(None, "--html", help="With --ray: write the fleet's "
                                            "HTML report here."),
    ) -> None:
        """Time SOURCE: cold start, warm latency, throughput, memory, end to end; peers; ratios.

        Budgets are enforced only when asked: exit 3 when --budget-ms is exceeded, or with
        --enforce-budget when the target profile's budget is; else they are reported.
        """
        from edgemed.bench.api import bench
        from edgemed.bench.runner import BenchConfig

        with handle_errors(as_json):
            if ray is not None:  # fleet benchmark (edgemed.distributed.fleet)
                from edgemed.distributed.fleet_cli import run_fleet

                run_fleet(source, ray=ray, target=target, runs=runs, warmup=warmup,
                          threads=threads, save=save, html=html, as_json=as_json)
                return
            cfg = BenchConfig(threads=threads, runs=runs, warmup=warmup, block=block, settle=settle,
                              processes=processes,
                              cold_processes=cold, batch_sizes=_ints(batch, "--batch"))
            import time

            t0 = time.perf_counter()
            say = ((lambda m: err_console.print(f"[dim]{time.perf_counter() - t0:6.1f}s {m}[/]"))
                   if not as_json else (lambda m: None))
            # libraries (NNCF) draw progress bars on stdout; keep stdout for our output
            with contextlib.redirect_stdout(sys.stderr):
                result = bench(source, compare=compare, backends=backend, peers=peers, config=cfg,
                               target=target, calib=calib,
                               dicom=None if dicom.lower() == "none" else dicom,
                               reference=reference, trust=trust, device_key=device_key,
                               input_shape=_ints(input_shape, "--input"),
                               ceilings=not no_ceilings, progress=say)
            result.data["budget"] = budget_verdict(result.data, budget_ms, enforce_budget)
            if save is not None:
                result.save(save)
            if as_json:
                print_json(result.data)
            else:
                render(result.data)
            b = result.data["budget"]
            if b.get("enforced") and b.get("exceeded"):
                from edgemed_runtime.sdk import ExitCode

                raise typer.Exit(int(ExitCode.BUDGET_EXCEEDED))
