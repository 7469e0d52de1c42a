"""``edgemed dataset build|inspect``: index a DICOM folder into a patient-split dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from .common import console, handle_errors, print_json


def _counts_table(title: str, report: dict[str, Any], key: str) -> Table:
    counts = report["counts"]
    names = sorted({n for split in counts.values() for n in split[key]})
    t = Table(title=title)
    t.add_column(key)
    for split in ("train", "val", "test"):
        t.add_column(split, justify="right")
    for n in names:
        t.add_row(n, *(str(counts[s][key].get(n, 0)) for s in ("train", "val", "test")))
    return t


def render(manifest_dict: dict[str, Any]) -> None:
    """Print the dataset's counts per split, class, modality and scanner, and the leak check."""
    report = manifest_dict["report"]
    counts = report["counts"]
    t = Table(title="splits (patient-level)")
    for col in ("split", "files", "patients"):
        t.add_column(col, justify="right" if col != "split" else "left")
    for s in ("train", "val", "test"):
        t.add_row(s, str(counts[s]["files"]), str(counts[s]["patients"]))
    console.print(t)
    for key in ("class", "modality", "scanner"):
        console.print(_counts_table(f"per {key}", report, key))
    leak = report["leak_check"]
    style = "green" if leak["ok"] else "red"
    console.print(f"[{style}]leak check: {'passed' if leak['ok'] else 'FAILED'}[/] "
                  f"({leak['patients_in_several_splits']} patients, "
                  f"{leak['studies_in_several_splits']} studies in more than one split)")
    calib = manifest_dict["calibration"]
    console.print(f"calibration sample: {len(calib['indices'])} files, seed {calib['seed']}, "
                  f"{len(calib['strata'])} strata (label x scanner)")
    if report["skipped"]:
        console.print(f"[yellow]skipped {len(report['skipped'])} files[/] "
                      f"(codes: {sorted({s['code'] for s in report['skipped']})})")


def _split_list(value: Optional[str]) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="Build and inspect DICOM datasets (patient-level splits).",
                              no_args_is_help=True)

    @dataset_app.command("build")
    def build(
        folder: Path = typer.Argument(..., help="folder of DICOM files (labels.csv or one sub-folder per class)"),
        out: Path = typer.Option(..., "--out", "-o", help="dataset directory to write"),
        labels: Optional[Path] = typer.Option(None, "--labels", help="labels CSV (path,label[,patient_id])"),
        modality: Optional[str] = typer.Option(None, help="keep these modalities, comma-separated"),
        body_part: Optional[str] = typer.Option(None, "--body-part", help="keep these Body Part Examined values"),
        orientation: Optional[str] = typer.Option(None, help="axial, coronal, sagittal, oblique"),
        min_frames: Optional[int] = typer.Option(None, "--min-frames"),
        max_frames: Optional[int] = typer.Option(None, "--max-frames"),
        val: float = typer.Option(0.15, help="validation fraction (patients)"),
        test: float = typer.Option(0.15, help="test fraction (patients)"),
        seed: int = typer.Option(0, help="seed of the split and the calibration sampler"),
        calib: int = typer.Option(64, help="calibration files to sample (stratified)"),
        size: int = typer.Option(224, help="model input size (square) for the cached arrays"),
        window: Optional[str] = typer.Option(None, help="VOI window override 'center,width'"),
        decode: bool = typer.Option(True, "--decode/--no-decode", help="decode into the array cache now"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Index FOLDER, split by patient (stratified), sample calibration files, cache arrays."""
        from edgemed.dicom import SeriesFilter, build_dataset
        from edgemed.errors import InvalidInputError
        from edgemed_runtime import PreprocessSpec

        with handle_errors(as_json):
            win = None
            if window:
                try:
                    c, w = (float(v) for v in window.split(","))
                except ValueError:
                    raise InvalidInputError("--window must be 'center,width'", found=window,
                                            code="bad-window") from None
                win = (c, w)
            spec = PreprocessSpec(size=(size, size), window=win)
            series = SeriesFilter(modality=_split_list(modality), body_part=_split_list(body_part),
                                  orientation=_split_list(orientation), min_frames=min_frames,
                                  max_frames=max_frames)
            kw = dict(spec=spec, labels_csv=labels, series=series, fractions=(1.0 - val - test, val, test),
                      seed=seed, calib_count=calib, decode=decode)
            if decode and not as_json:
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("decoding", total=None)
                    m = build_dataset(folder, out, progress=lambda d, t: progress.update(task, completed=d, total=t), **kw)
            else:
                m = build_dataset(folder, out, **kw)
            d = m.to_dict()
            if as_json:
                print_json({"ok": True, "out": str(out), "report": d["report"],
                            "calibration": d["calibration"]})
                return
            render(d)
            console.print(f"wrote {out / 'dataset.json'}")

    @dataset_app.command("inspect")
    def inspect(
        path: Path = typer.Argument(..., help="dataset directory (or its dataset.json)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Show counts per split, class, modality and scanner, the leak check and calibration."""
        from edgemed.dicom import load_manifest

        with handle_errors(as_json):
            d = load_manifest(path).to_dict()
            if as_json:
                print_json({"ok": True, "report": d["report"], "calibration": d["calibration"],
                            "class_names": d["class_names"], "spec": d["spec"]})
                return
            render(d)

    app.add_typer(dataset_app, name="dataset")
