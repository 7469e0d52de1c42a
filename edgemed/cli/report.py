"""``edgemed report``: a self-contained HTML report (plus PNGs) of a benchmark and/or an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        source: Path = typer.Argument(..., help="A result of `edgemed bench --save`, or an "
                                      "artifact directory."),
        artifact: Optional[Path] = typer.Option(None, "--artifact", help="Artifact directory for "
                                                "the gate table, Grad-CAM and provenance (default: "
                                                "the one the benchmark names)."),
        out: Path = typer.Option(Path("edgemed-report"), "--out", "-o", help="Output folder."),
        title: str = typer.Option("edgemed report", "--title"),
        as_json: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
    ) -> None:
        """Write OUT/report.html (images embedded) and OUT/*.png."""
        from edgemed.bench.api import BenchResult
        from edgemed.bench.report import build_report

        with handle_errors(as_json):
            if source.is_dir():
                files = build_report(out, artifact=artifact or source, title=title)
            else:
                files = build_report(out, result=BenchResult.load(source).data, artifact=artifact,
                                     title=title)
            if as_json:
                print_json({"ok": True, "html": str(files.html), "pngs": [str(p) for p in files.pngs]})
            else:
                console.print(f"wrote {files.html} and {len(files.pngs)} PNG(s)")
