"""``edgemed demo``: the whole job on built-in synthetic data, no arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, handle_errors, print_json, progress_callback


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("edgemed-demo"), "--out", "-o", help="output folder"),
        epochs: int = typer.Option(8, "--epochs", min=1, help="training epochs"),
        patients: Optional[int] = typer.Option(None, "--patients", min=5,
                                     help="synthetic patients (default 24; 12 for segmentation)"),
        task: str = typer.Option("classification", "--task",
                                 help="classification (a 2D lesion classifier) or segmentation "
                                 "(a 3D UNet, two organ labels, DICOM SEG out)"),
        seed: int = typer.Option(0, "--seed"),
        targets: str = typer.Option("cpu-x86,openvino-cpu,mobile-android", "--targets",
                                    help="comma-separated targets to release (those buildable here run)"),
        as_json: bool = typer.Option(False, "--json", help="print the result as one JSON "
                                     "document on stdout (progress goes to stderr)"),
    ) -> None:
        """Synthetic CT DICOM -> train a MONAI ResNet -> release bundles per target -> FP32 vs INT8.

        Exits with the release's code (docs/cli.md): 0 every target shipped, 1 a gate failed,
        5 a target failed, 130 interrupted.
        """
        from dataclasses import asdict

        from edgemed.demo import DemoConfig, run_demo

        if task not in ("classification", "segmentation"):
            with handle_errors(as_json):
                from edgemed.errors import InvalidInputError

                raise InvalidInputError("unknown demo task", expected="classification or "
                                        "segmentation", found=task, code="bad-option")
        if task == "segmentation":
            with handle_errors(as_json):
                code = _segmentation(out, patients or 12, seed, targets, as_json)
            raise typer.Exit(code)
        with handle_errors(as_json):
            cfg = DemoConfig(epochs=epochs, n_patients=patients or 24, seed=seed,
                             targets=tuple(t.strip() for t in targets.split(",") if t.strip()))
            with progress_callback("demo", quiet=as_json) as say:
                r = run_demo(out, cfg, progress=say)
            code = int(r.release.get("exit_code", 0))  # the release's: same state, same code
            if as_json:
                print_json({"ok": code == 0, **asdict(r)})
                raise typer.Exit(code)
            first = next(o for o in r.release["targets"] if o["chosen"] == r.chosen_variant)
            console.print(f"split by patient: {r.split}; {first['target']} chose "
                          f"[bold]{r.chosen_variant}[/] ({first['status']}): {r.why}")
            t = Table(title=f"held-out test patients: FP32 vs {first['target']} {r.chosen_variant} "
                            "(same run)")
            t.add_column("")
            t.add_column("FP32", justify="right")
            t.add_column("chosen", justify="right")
            t.add_column("chosen / FP32", justify="right")
            for k in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
                t.add_row(k, f"{r.fp32[k]:.3f}", f"{r.int8[k]:.3f}", f"{r.int8[k] - r.fp32[k]:+.3f}")
            t.add_row("size (MB)", f"{r.size_bytes['fp32'] / 1e6:.2f}", f"{r.size_bytes['int8'] / 1e6:.2f}",
                      f"{r.size_bytes['int8'] / r.size_bytes['fp32']:.2f}x")
            t.add_row("median latency (ms)", f"{r.latency_ms['fp32']:.2f}", f"{r.latency_ms['int8']:.2f}",
                      f"{r.latency_ms['int8'] / r.latency_ms['fp32']:.2f}x")
            t.add_row("top-1 agreement", "", f"{r.agreement['top1_agreement']:.3f}", "")
            console.print(t)
            p = Table(title="runtime predictions on held-out DICOM files")
            for col in ("file", "label", "predicted", "p(lesion)"):
                p.add_column(col)
            for row in r.predictions:
                p.add_row(row["file"], row["label"], row["predicted"], f"{row['p_lesion']:.3f}")
            console.print(p)
            from edgemed.evaluate import gate_summary

            rt = Table(title=f"release: one bundle per target ({r.release['seconds']:.0f} s)")
            for col in ("target", "status", "chosen", "gate: n, diff [CI]", "latency", "size (MB)",
                        "device check", "device installs"):
                rt.add_column(col, no_wrap=col in ("target", "chosen", "device installs"))
            for o in r.release["targets"]:
                lat = o.get("latency")
                rt.add_row(o["target"], o["status"], str(o["chosen"]), gate_summary(o.get("gate")),
                           "unmeasured (host is not the device)" if isinstance(lat, str)
                           and lat.startswith("unmeasured") else "measured" if lat else "–",
                           f"{(o['size_bytes'] or 0) / 1e6:.2f}",
                           "ok" if (o.get("device_check") or {}).get("ok") else "–",
                           escape(o.get("device_install") or "–"))
            console.print(rt)
            for o in r.release["targets"]:
                console.print(f"[bold]{o['target']}[/]: {o['status']}, chose {o['chosen']}: "
                              f"{o.get('why') or (o.get('error') or {}).get('message')}")
                for w in (o.get("gate") or {}).get("warnings") or ():
                    console.print(f"  [yellow]warning:[/] {w}")
            console.print(f"report: {r.release['report']}")
            console.print(f"try: edgemed predict {r.artifact} {r.out / 'dicom'}   |   "
                          f"edgemed release {r.out / 'edgemed.toml'} (re-run: unchanged steps skip)")
        raise typer.Exit(code)


def _segmentation(out: Path, patients: int, seed: int, targets: str, as_json: bool) -> int:
    """``edgemed demo --task segmentation``: run it, print what it did; the release's exit code."""
    from dataclasses import asdict

    from edgemed.segdemo import SegDemoConfig, run_segmentation_demo
    from edgemed.segmentation.gate import seg_gate_summary

    cfg = SegDemoConfig(n_series=2 * patients, n_patients=patients, seed=seed,
                        targets=tuple(t.strip() for t in targets.split(",")
                                                           if t.strip()))
    with progress_callback("demo", quiet=as_json) as say:
        r = run_segmentation_demo(out, cfg, progress=say)
    code = int(r.release.get("exit_code", 0))
    if as_json:
        print_json({"ok": code == 0, **asdict(r)})
        return code
    console.print(f"series split by patient: {r.split}; 3D UNet trained in {r.train_seconds:.0f} s "
                  f"(final DiceCE loss {r.final_loss:.3f})")
    rt = Table(title=f"release: one bundle per target ({r.release['seconds']:.0f} s)")
    for col in ("target", "status", "chosen", "gate: n, Dice / HD95 / SD diff [CI]",
                "series -> labels p50", "device SEG"):
        rt.add_column(col)
    for o in r.release["targets"]:
        lat = (o.get("latency") or {}) if isinstance(o.get("latency"), dict) else {}
        p50 = ", ".join(f"{n} {c['p50_ms']:.0f} ms" for n, c in (lat.get("candidates") or {}).items())
        dc = o.get("device_check") or {}
        seg = (f"equal ({dc['voxels']} voxels)" if dc.get("voxels_differing") == 0 else
               f"{dc['voxels_differing']} voxels differ" if "voxels_differing" in dc else "not run")
        rt.add_row(o["target"], o["status"], str(o["chosen"] or "none"),
                   seg_gate_summary(o.get("gate")) if o.get("gate") else
                   str((o.get("error") or {}).get("message") or "not gated"),
                   p50 or str(o.get("latency") or "not measured"), seg)
    for target, why in r.unsupported.items():
        rt.add_row(target, "not released", "none", why, "", "")
    console.print(rt)
    for row in r.volumes_ml:
        console.print(f"held-out {row['series']}: " + ", ".join(
            f"{k} {v:.1f} ml" for k, v in row.items() if k != "series"))
    for f in r.seg_files:
        console.print(f"DICOM SEG: {f}")
    console.print(f"report: {r.release['report']}")
    return code
