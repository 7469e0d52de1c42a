"""``edgemed build``: model + data + target -> gated INT8 artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console, handle_errors, parse_window, print_json, progress_callback


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        model: str = typer.Option(..., "--model", "-m", help="nn factory 'pkg.mod:fn', 'monai:Arch k=v ...', TorchScript or .onnx file"),
        out: Path = typer.Option(..., "--out", "-o", help="output artifact directory"),
        input: Optional[str] = typer.Option(None, "--input", help="input shape NxCxHxW, e.g. 1x1x224x224"),
        weights: Optional[Path] = typer.Option(None, "--weights", help="state_dict / checkpoint for the model"),
        calib: Optional[Path] = typer.Option(None, "--calib", help="calibration data: DICOM folder, .npy/.npz"),
        val: Optional[Path] = typer.Option(None, "--val", help="validation data: DICOM folder with labels.csv or class sub-folders"),
        target: str = typer.Option("cpu-x86", "--target", "-t", help="target profile name or .toml path"),
        labels: Optional[str] = typer.Option(None, "--labels", help="class names in output order, comma-separated"),
        window: Optional[str] = typer.Option(None, "--window", help="VOI window CENTER,WIDTH (overrides the file's)"),
        select: str = typer.Option("auto", "--select", help="auto | default | a variant name"),
        require_compressed: bool = typer.Option(
            False, "--require-compressed",
            help="fail (exit 1) rather than ship the FP32 baseline when no compressed candidate can"),
        seed: int = typer.Option(0, "--seed"),
        ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster HOST:PORT or auto: the gate's logits over the --val DICOM folder through Ray Data"),
        ray_actors: int = typer.Option(2, "--ray-actors", min=1, help="Ray Data actors for the gate (one CPU each)"),
        as_json: bool = typer.Option(False, "--json", help="print the result as one JSON "
                                     "document on stdout (progress goes to stderr)"),
    ) -> None:
        """Build the fastest compressed artifact that passes the accuracy gate and is no slower
        than FP32; else the FP32 baseline (status fallback-fp32), or exit 1 with --require-compressed."""
        from edgemed_runtime import PreprocessSpec
        from edgemed_runtime.sdk import parse_shape

        from edgemed.pipeline import BuildOptions
        from edgemed.pipeline import build as run_build

        with handle_errors(as_json):
            shape = parse_shape(input) if input else None
            spec = None
            if shape is not None:
                spec = PreprocessSpec(window=parse_window(window), size=(shape[-2], shape[-1]),
                                      channels=shape[1] if shape[1] in (1, 3) else 1)
            from edgemed.targets import load_target

            profile = load_target(target)
            if require_compressed:
                profile = profile.model_copy(update={"require_compressed": True})
            with progress_callback("building", quiet=as_json) as say:
                art = run_build(
                    model, calibration=calib, validation=val, target=profile, out=out,
                    input_shape=shape, weights=weights, preprocess=spec,
                    labels=tuple(labels.split(",")) if labels else None,
                    options=BuildOptions(seed=seed, select=select, ray=ray, ray_actors=ray_actors),
                    progress=say,
                )
            summary = artifact_summary(art)
            if as_json:
                print_json({"ok": True, **summary})
                return
            render_summary(summary)


def artifact_summary(art: object) -> dict:
    """The figures a user wants after a build, from an Artifact."""
    sel = next((r for r in art.provenance if r.get("pass") == "select_variant"), {})  # type: ignore[attr-defined]
    gate = (art.metrics or {}).get("gate") or {}  # type: ignore[attr-defined]
    return {
        "artifact": str(art.path), "format": art.format, "backend": art.backend,  # type: ignore[attr-defined]
        "target": dict(art.target), "chosen": sel.get("chosen"), "why": sel.get("why"),  # type: ignore[attr-defined]
        "status": sel.get("status"), "isa": sel.get("isa"),
        "timings_ms": sel.get("timings_ms", {}), "gate": gate,
        "warnings": sel.get("warnings", []), "class_order": sel.get("class_order"),
        "size_bytes": art.metrics.get("size_bytes"),  # type: ignore[attr-defined]
        "size_ratio": art.metrics.get("size_ratio"),  # type: ignore[attr-defined]
    }


def render_summary(s: dict) -> None:
    """Print a build summary with rich tables."""
    console.print(f"[bold green]artifact[/] {s['artifact']}  ({s['format']}, {s['backend']}, "
                  f"target {s['target'].get('name')})")
    console.print(f"chose [bold]{s['chosen']}[/] ({s.get('status')}): {s['why']}")
    for w in s.get("warnings") or []:
        console.print(f"[bold yellow]warning:[/] {w}")
    if s["timings_ms"]:
        t = Table(title="latency on this host (batch 1, interleaved)")
        for col in ("candidate", "p50 ms", "p90 ms", "x FP32"):
            t.add_column(col, justify="right" if col != "candidate" else "left")
        for name, st in s["timings_ms"].items():
            t.add_row(name, f"{st['p50']:.3f}", f"{st['p90']:.3f}",
                      f"{st.get('ratio_to_fp32', 1.0):.3f}")
        console.print(t)
    g = s.get("gate") or {}
    if g.get("reference") or g.get("agreement"):
        t = Table(title=f"accuracy gate ({g.get('mode')}, n={g.get('n')}): "
                        f"{'PASSED' if g.get('passed') else 'FAILED'}")
        t.add_column("metric")
        t.add_column("FP32", justify="right")
        t.add_column("INT8", justify="right")
        for k, v in (g.get("reference") or {}).items():
            t.add_row(k, f"{v:.4f}", f"{g['candidate'][k]:.4f}")
        for k, v in (g.get("agreement") or {}).items():
            t.add_row(k, "", f"{v:.4f}")
        console.print(t)
    if s.get("size_ratio"):
        console.print(f"size {s['size_bytes'] / 1e6:.2f} MB ({s['size_ratio']:.3f}x FP32)")
