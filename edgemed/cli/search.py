"""``edgemed search``: find the fastest (or smallest) compressed model that passes the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from .common import console, err_console, handle_errors, parse_window, print_json


def _task_from_folders(model: str, weights: Optional[Path], train: Path, val: Path,
                       input: str, window: Optional[str]) -> Any:
    import numpy as np

    from edgemed_runtime import PreprocessSpec
    from edgemed_runtime.sdk import parse_shape

    from edgemed.dicom.folder import load_folder
    from edgemed.errors import InvalidInputError
    from edgemed.model import load_model
    from edgemed.search import SearchTask

    shape = parse_shape(input)
    win = parse_window(window)
    spec = PreprocessSpec(window=win, size=(shape[-2], shape[-1]),
                          channels=shape[1] if shape[1] in (1, 3) else 1)
    src = load_model(model, weights=weights)
    if src.kind != "torch":
        raise InvalidInputError("the search compresses PyTorch models", expected="an nn.Module "
                                "factory, monai:Arch or a TorchScript file", found=src.kind,
                                fix="pass the PyTorch model, not its ONNX export")
    tr = load_folder(train, spec)
    va = load_folder(val, spec, class_names=tr.class_names)
    if tr.y is None or va.y is None:
        raise InvalidInputError("the search needs labelled data", expected="labels.csv or class "
                                "sub-folders", found="unlabelled folder", code="needs-labels")
    rng = np.random.default_rng(0)
    calib = tr.x[rng.permutation(len(tr.x))[:64]]
    return SearchTask(model=src.module, train=(tr.x, tr.y), val=(va.x, va.y), calibration=calib,
                      class_names=tuple(tr.class_names), description=src.description)


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        out: Path = typer.Option(..., "--out", "-o", help="output folder (study, Pareto table and plot)"),
        demo: bool = typer.Option(False, "--demo", help="search on the built-in synthetic task"),
        trials: int = typer.Option(20, "--trials", "-n", min=1, help="total trials of the study"),
        strategy: str = typer.Option("tpe", "--strategy", "-s", help="grid | tpe | anneal"),
        objective: str = typer.Option("latency", "--objective", help="latency | size"),
        storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL (default sqlite:///OUT/study.db)"),
        study_name: str = typer.Option("edgemed-search", "--study-name"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="'pkg.mod:fn', 'monai:Arch k=v', TorchScript"),
        weights: Optional[Path] = typer.Option(None, "--weights"),
        train: Optional[Path] = typer.Option(None, "--train", help="labelled DICOM folder for recovery fine-tuning"),
        val: Optional[Path] = typer.Option(None, "--val", help="labelled DICOM folder for the gate"),
        input: Optional[str] = typer.Option(None, "--input", help="input shape NxCxHxW"),
        window: Optional[str] = typer.Option(None, "--window", help="VOI window CENTER,WIDTH"),
        max_accuracy_drop: Optional[float] = typer.Option(
            None, "--max-accuracy-drop", help="an absolute limit on top of non-inferiority"),
        margin: float = typer.Option(0.05, "--margin", help="non-inferiority margin"),
        seed: int = typer.Option(0, "--seed"),
        ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster (host:port | auto): "
                                          "time each trial on a device carrying --target"),
        target: Optional[str] = typer.Option(None, "--target", help="with --ray: the target "
                                             "whose devices (target:NAME resource) time trials"),
        ray_wait: float = typer.Option(60.0, "--ray-wait", help="seconds a trial waits for "
                                       "such a device to join before it fails"),
        workers: int = typer.Option(0, "--workers", min=0, help="with --ray: build the trials "
                                    "as Ray tasks on this many CPU workers of the cluster (0: "
                                    "in this process)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Search compression settings (Optuna) under the accuracy gate; resumable."""
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        from edgemed.errors import InvalidInputError
        from edgemed.evaluate import GateConfig
        from edgemed.search import SearchConfig, demo_task, run_search
        from edgemed.search.study import redact

        with handle_errors(as_json):
            if strategy not in ("grid", "tpe", "anneal"):
                raise InvalidInputError("unknown search strategy", expected="grid, tpe or anneal",
                                        found=strategy)
            if objective not in ("latency", "size"):
                raise InvalidInputError("unknown objective", expected="latency or size",
                                        found=objective)
            cfg = SearchConfig(strategy=strategy, objective=objective, trials=trials,  # type: ignore[arg-type]
                               storage=storage, study_name=study_name, seed=seed,
                               ray=ray, target=target, ray_wait_s=ray_wait, workers=workers,
                               gate=GateConfig(max_accuracy_drop=max_accuracy_drop,
                                               non_inferiority_margin=margin))
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                          disable=as_json) as prog:
                bar = prog.add_task("preparing", total=trials)

                def say(msg: str) -> None:
                    prog.update(bar, description=msg)

                if demo:
                    task = demo_task(out / "demo", seed=seed, progress=say)
                else:
                    if not (model and train and val and input):
                        raise InvalidInputError(
                            "a search needs a model and data", expected="--demo, or --model, "
                            "--train, --val and --input", found="missing options",
                            fix="try: edgemed search --demo --trials 20 --out search-demo")
                    task = _task_from_folders(model, weights, train, val, input, window)

                def step(done: int, total: int, row: Any) -> None:
                    desc = f"{strategy} search"
                    if row:
                        acc = row.get("accuracy")
                        desc += (f" · trial {row['trial']}: {row['state'].lower()}"
                                 + (f", acc {acc:.3f}" if acc is not None else ""))
                    prog.update(bar, completed=done, total=total, description=desc)

                result = run_search(task, cfg, out, progress=step)
            if as_json:
                print_json({"ok": True, **result.to_dict()})
                return
            console.print(f"[bold]{task.description}[/]")
            table = Table(title=f"Pareto front ({len(result.trials)} trials, "
                          f"{result.seconds:.0f} s this run)")
            unit = "latency ms" if objective == "latency" else "zlib bytes"
            for col in ("trial", unit, "accuracy", "chain / settings"):
                table.add_column(col)
            for r in result.pareto:
                table.add_row(str(r["trial"]), f"{r['objective']:.4g}", f"{r['accuracy']:.3f}",
                              f"ratio {r['structured_ratio']}, sparsity {r['sparsity']}, "
                              f"k {r['clusters']}, {r['precision']}, ft {r['finetune_epochs']}")
            console.print(table)
            ref = result.reference
            console.print(f"FP32 reference accuracy {ref['accuracy']:.3f}; best that passed the "
                          f"gate: {('trial ' + str(result.best['trial'])) if result.best else 'none'}")
            if result.gradcam_flagged:
                console.print(f"[yellow]Grad-CAM: trials {result.gradcam_flagged} on the front "
                              "look elsewhere than the FP32 model (see trials/*/gradcam.png)[/]")
            console.print(f"plot: {out / 'pareto.png'}   table: {out / 'pareto.csv'}   "
                          f"study: {redact(result.storage)}")
