"""``edgemed predict``: run an artifact or bundle on DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        model: Path = typer.Argument(..., help="artifact directory (or its model file), bundle, or .onnx"),
        files: List[Path] = typer.Argument(..., help="DICOM files or folders"),
        backend: Optional[str] = typer.Option(None, "--backend", help="override the artifact's backend"),
        trust: Optional[Path] = typer.Option(None, "--trust", help="publisher public key (bundles)"),
        device_key: Optional[Path] = typer.Option(None, "--device-key", help="device private key (bundles)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Print class probabilities for each DICOM file."""
        from edgemed.predict import predict_files

        with handle_errors(as_json):
            extra = {k: v for k, v in (("trust", trust), ("device_key", device_key)) if v}
            rows = predict_files(model, files, backend=backend, **extra)
            if as_json:
                print_json({"ok": True, "predictions": rows})
                return
            t = Table(title=f"predictions ({model})")
            t.add_column("file")
            t.add_column("prediction")
            labels = list(rows[0]["probabilities"]) if rows else []
            for lab in labels:
                t.add_column(f"p({lab})", justify="right")
            for r in rows:
                t.add_row(r["file"], r["prediction"], *(f"{r['probabilities'][l]:.4f}" for l in labels))
            console.print(t)
