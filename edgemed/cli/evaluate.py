"""``edgemed evaluate MODEL DATA``: classification metrics with CIs on a labelled DICOM folder;
with ``--reference`` the accuracy gate (exit 1 when it fails); ``--ray`` for Ray Data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from .common import JSON_HELP, console, handle_errors, parse_window, print_json

METRICS = ("accuracy", "sensitivity", "specificity", "auc")


def _spec(input: Optional[str], window: Optional[str]) -> Any:
    """The PreprocessSpec of a plain ONNX model from --input / --window (None: the default)."""
    from edgemed_runtime import PreprocessSpec
    from edgemed_runtime.sdk import parse_shape

    if input is None and window is None:
        return None
    win = parse_window(window)
    if input is None:
        return PreprocessSpec(window=win, size=None)
    shape = parse_shape(input)
    return PreprocessSpec(window=win, size=(shape[-2], shape[-1]),
                          channels=shape[1] if shape[1] in (1, 3) else 1)


def _fmt_ci(ci: Any) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci is not None else ""


def render(doc: dict[str, Any]) -> None:
    """The metrics table (model, CIs; the reference beside it) and the gate's verdict."""
    eng = doc["engine"]
    where = f"Ray Data, {eng['actors']} actors" if eng["ray"] else "this process"
    conf = doc["metrics"].get("confidence", 0.95)
    t = Table(title=f"{doc['model']} on {doc['data']}: n={doc['n']} ({where}"
              f"{', ' + str(doc['skipped']) + ' skipped' if doc['skipped'] else ''})")
    ref = doc.get("reference_metrics")
    cols = ["metric", "model", f"{conf:.0%} CI"] + (["reference", f"{conf:.0%} CI "] if ref else [])
    for c in cols:
        t.add_column(c, justify="left" if c == "metric" else "right")
    for k in METRICS:
        if k not in doc["metrics"]["overall"]:
            continue
        row = [k, f"{doc['metrics']['overall'][k]:.4f}", _fmt_ci(doc["metrics"]["ci"].get(k))]
        if ref:
            row += [f"{ref['overall'][k]:.4f}", _fmt_ci(ref["ci"].get(k))]
        t.add_row(*row)
    t.add_row("ECE", f"{doc['metrics']['ece']:.4f}", "", *(
        [f"{ref['ece']:.4f}", ""] if ref else []))
    console.print(t)
    g = doc.get("gate")
    if g:
        verdict = "[bold green]PASSED[/]" if g["passed"] else "[bold red]FAILED[/]"
        console.print(f"gate {verdict} ({doc['gate_rule']})")
        for m, r in (g.get("non_inferiority") or {}).items():
            console.print(f"  {m}: difference {r['difference']:+.4f}, CI [{r['ci'][0]:+.4f}, "
                          f"{r['ci'][1]:+.4f}], margin -{r['margin']}")
        console.print(f"  top-1 agreement {g['agreement']['top1_agreement']:.4f}")
        for r in g["reasons"]:
            console.print(f"  [red]{r}[/]")
        for w in g["warnings"]:
            console.print(f"  [yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        model: Path = typer.Argument(..., help="artifact folder, .edgemed bundle or .onnx file"),
        data: Path = typer.Argument(..., help="labelled DICOM folder: labels.csv "
                                    "(path,label) or one sub-folder per class"),
        reference: Optional[Path] = typer.Option(None, "--reference", help="the FP32 model: "
                                                 "also run the accuracy gate (exit 1 if it fails)"),
        ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster HOST:PORT or auto: "
                                          "logits through Ray Data"),
        actors: int = typer.Option(2, "--actors", min=1, help="Ray Data actors (one CPU each)"),
        threads: int = typer.Option(1, "--threads", min=1, help="inference threads per session"),
        input: Optional[str] = typer.Option(None, "--input", help="plain .onnx: input shape "
                                            "NxCxHxW (default: the graph's)"),
        window: Optional[str] = typer.Option(None, "--window", help="plain .onnx: VOI window "
                                             "CENTER,WIDTH (default: the file's)"),
        trust: Optional[Path] = typer.Option(None, "--trust", help="publisher public key (bundles)"),
        device_key: Optional[Path] = typer.Option(None, "--device-key", help="device private key (bundles)"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Accuracy, sensitivity, specificity, AUC (bootstrap CIs) and calibration of a model on
        labelled DICOM files; with --reference, the non-inferiority gate against FP32."""
        from edgemed.distributed.folder_eval import evaluate_folder

        with handle_errors(as_json):
            extra = {k: str(v) for k, v in (("trust", trust), ("device_key", device_key)) if v}
            res = evaluate_folder(model, data, reference=reference, address=ray, actors=actors,
                                  threads=threads, preprocess=_spec(input, window),
                                  open_args=extra)
            doc = res.to_dict()
            if as_json:
                print_json({"ok": True, **doc})
            else:
                render(doc)
        if res.exit_code:
            raise typer.Exit(res.exit_code)
