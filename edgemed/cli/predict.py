"""``edgemed predict``: run an artifact or bundle on DICOM files; one row per file, a summary,
exit 0 (all read), 4 (some failed) or 2 (none read)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, handle_errors, print_json


def _render(res: object, model: Path) -> None:
    """The per-file table and the summary line."""
    rows, labels = res.rows, list(res.labels)  # type: ignore[attr-defined]
    if res.note:  # type: ignore[attr-defined]
        console.print(f"[yellow]note:[/] {escape(res.note)}")  # type: ignore[attr-defined]
    t = Table(title=f"predictions ({res.model})")  # type: ignore[attr-defined]
    for col in ("file", "status", "prediction", *(f"p({lab})" for lab in labels), "note"):
        t.add_column(col, justify="right" if col.startswith("p(") else "left")
    for r in rows:
        probs = [f"{r['probabilities'][lab]:.4f}" if lab in r["probabilities"] else ""
                 for lab in labels]
        err = r["error"] or {}
        why = f"[{err.get('code')}] {err.get('message')}" if err else "; ".join(r["warnings"])
        if "volumes_ml" in r:  # a segmentation row: label volumes (and the SEG written)
            why = ", ".join(f"{k} {v:.1f} ml" for k, v in r["volumes_ml"].items()) + (
                f"; SEG {r['seg']}" if r.get("seg") else "")
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}[r["status"]]
        t.add_row(escape(r["file"]), f"[{style}]{r['status']}[/]", r["prediction"] or "", *probs,
                  escape(why))
    console.print(t)
    s = res.summary()  # type: ignore[attr-defined]
    console.print(f"{s['ok']} of {s['files']} file(s) predicted, {s['failed']} failed, "
                  f"{s['skipped']} skipped, {s['warned']} with warnings (exit {s['exit_code']})")


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        model: Path = typer.Argument(..., help="artifact folder (or a file in it), bundle, or .onnx"),
        files: List[Path] = typer.Argument(..., help="DICOM files or folders (searched at any "
                                           "depth); series folders for a volume model"),
        backend: Optional[str] = typer.Option(None, "--backend", help="override the artifact's backend"),
        trust: Optional[Path] = typer.Option(None, "--trust", help="publisher public key (bundles)"),
        device_key: Optional[Path] = typer.Option(None, "--device-key", help="device private key (bundles)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output (one object: "
                                     "summary, note, one prediction row per file)"),
        seg_out: Optional[Path] = typer.Option(None, "--seg-out", help="segmentation models: "
                                               "write one DICOM SEG per series into this folder"),
    ) -> None:
        """Print class probabilities for each DICOM file (each series for a volume model; label
        volumes and DICOM SEG for segmentation); inputs that fail are named and skipped."""
        from edgemed.predict import predict_files

        with handle_errors(as_json):
            extra = {k: v for k, v in (("trust", trust), ("device_key", device_key)) if v}
            res = predict_files(model, files, backend=backend, seg_out=seg_out, **extra)
            if as_json:
                print_json(res.to_dict())
            else:
                _render(res, model)
        if res.exit_code:
            raise typer.Exit(res.exit_code)
