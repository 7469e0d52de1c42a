"""``edgemed release edgemed.toml``: DICOM folder -> verified, benchmarked bundles per target."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .common import cli_words, console, handle_errors, print_json, progress_callback


def render_release(r: object) -> None:
    """Print a release result as a rich table."""
    t = Table(title=f"release in {r.seconds:.1f} s ({r.skipped_steps} unchanged steps skipped)")  # type: ignore[attr-defined]
    from edgemed.evaluate import gate_summary

    for col in ("target", "status", "chosen", "acc FP32/chosen", "gate: n, diff [CI]", "size",
                "p50 ms", "device check", "device installs"):
        # names are never cut or broken (piped output is wide, common.WIDE); figures may wrap
        t.add_column(col, no_wrap=col in ("target", "status", "chosen", "device installs"), overflow="fold")
    for o in r.targets:  # type: ignore[attr-defined]
        g = o.gate or {}
        acc = (f"{g['reference']['accuracy']:.3f}/{g['candidate']['accuracy']:.3f}"
               if g.get("reference") else "–")
        lat = o.latency if isinstance(o.latency, str) else ", ".join(
            f"{c['p50_ms']:.2f}" for c in (o.latency or {}).get("candidates", {}).values()
            if c.get("p50_ms") is not None) or "–"
        colour = {"released": "green", "fallback-fp32": "yellow"}.get(o.status, "red")
        t.add_row(escape(o.target), f"[{colour}]{o.status}[/]", escape(o.chosen or "–"), acc,
                  gate_summary(g),
                  f"{o.size_bytes / 1e6:.2f} MB" if o.size_bytes else "–", lat,
                  "ok" if (o.device_check or {}).get("ok") else "–",
                  escape(o.device_install or "–"))
    console.print(t)
    if r.interrupted:  # type: ignore[attr-defined]
        i = r.interrupted  # type: ignore[attr-defined]
        console.print(f"[yellow]interrupted[/] at {i.get('target') or 'the dataset'}"
                      f"{', step ' + i['step'] if i.get('step') else ''}: finished steps are "
                      "kept and skipped next time")
    for o in r.targets:  # type: ignore[attr-defined]
        if o.why:
            console.print(f"[bold]{o.target}[/]: chose {o.chosen}: {o.why}")
        for w in (o.gate or {}).get("warnings") or ():
            console.print(f"[yellow]{o.target}: warning:[/] {w}")
        if o.error:
            fix = f" (fix: {o.error['fix']})" if o.error.get("fix") else ""
            console.print(f"[red]{escape(o.target)}:[/] " + escape(cli_words(
                f"{o.error.get('message')}: {o.error.get('found')}{fix}")))
    console.print(f"report: {r.report}")  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    @app.command()
    def release(
        project: Path = typer.Argument(Path("edgemed.toml"), help="the release project file"),
        force: bool = typer.Option(False, "--force", help="redo every step"),
        wait: bool = typer.Option(False, "--wait", help="if another run holds the release "
                                  "folder, wait for it (default: refuse at once, exit 6)"),
        as_json: bool = typer.Option(False, "--json", help="print the result as one JSON "
                                     "document on stdout (progress goes to stderr)"),
    ) -> None:
        """Build, gate, seal, verify as a device, benchmark and register every target.

        Exit codes (docs/cli.md): 0 every target shipped, 1 a gate failed, 2 bad input,
        5 a target failed, 6 the folder is locked by another run, 130 interrupted.
        """
        from edgemed.release import release as run_release

        with handle_errors(as_json):
            with progress_callback("release", quiet=as_json) as say:
                r = run_release(project, progress=say, force=force, wait=wait)
            if as_json:
                print_json(r.to_dict())
            else:
                render_release(r)
        raise typer.Exit(r.exit_code)
