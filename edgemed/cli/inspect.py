"""``edgemed inspect``: what an artifact or bundle holds (a bundle is not decrypted)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import console, handle_errors, print_json


def inspect_path(path: Path) -> dict:
    """Describe an artifact directory (or its model file) or a bundle, as a dict."""
    from edgemed_runtime import Artifact, is_bundle

    from edgemed.errors import InvalidInputError
    from edgemed.predict import resolve_model_path

    p = resolve_model_path(path)
    if is_bundle(p):
        from edgemed.bundle import inspect_bundle

        return {"kind": "bundle", **inspect_bundle(p)}
    if not p.exists():
        raise InvalidInputError("path does not exist", found=str(p), code="not-found")
    art = Artifact.load(p)
    d = art.to_dict()
    d["kind"] = "artifact"
    d["path"] = str(art.path)
    d["size_bytes"] = art.model_path.stat().st_size if art.model_path.is_file() else None
    return d


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        path: Path = typer.Argument(..., help="artifact directory / model file, or bundle"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Show format, IO, preprocessing, target, gate metrics and provenance."""
        with handle_errors(as_json):
            d = inspect_path(path)
            if as_json:
                print_json(d)
                return
            t = Table(title=f"{d['kind']}: {path}", show_header=False)
            t.add_column("field", style="bold")
            t.add_column("value")
            for key in ("format", "backend", "model_file", "size_bytes"):
                if key in d:
                    t.add_row(key, str(d[key]))
            for key in ("io", "preprocess", "target"):
                if key in d:
                    t.add_row(key, ", ".join(f"{k}={v}" for k, v in d[key].items()))
            console.print(t)
            if d.get("provenance"):
                pt = Table(title="provenance")
                pt.add_column("#", justify="right")
                pt.add_column("pass")
                pt.add_column("details")
                for i, r in enumerate(d["provenance"]):
                    details = {k: v for k, v in r.items() if k not in ("pass", "candidates", "timings_ms")}
                    pt.add_row(str(i), str(r.get("pass")), str(details)[:160])
                console.print(pt)
            if d["kind"] == "bundle":
                console.print_json(data={k: v for k, v in d.items() if k not in ("provenance",)})
