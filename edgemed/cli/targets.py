"""``edgemed targets list|show|check``: the hardware target profiles, and whether this host can
build, time and run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, handle_errors, print_json

_DIR_HELP = "extra folder of your own profiles (repeatable; also $EDGEMED_TARGETS)"


def _describe(p: Any) -> dict[str, Any]:
    """A TargetProfile as JSON-ready data, with its hash."""
    return p.model_dump(mode="json") | {"sha256": p.sha256}


def register(app: typer.Typer) -> None:
    targets = typer.Typer(help="Hardware target profiles (targets/*.toml and your own folders).",
                          no_args_is_help=True)
    app.add_typer(targets, name="targets")

    @targets.command("list")
    def list_cmd(
        dirs: Optional[List[Path]] = typer.Option(None, "--dir", help=_DIR_HELP),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """List the profiles found (a profile in your folder shadows a built-in of that name)."""
        from edgemed.targets import list_targets, load_target

        with handle_errors(as_json):
            extra = [str(d) for d in dirs or []]
            rows = []
            for name in list_targets(extra):
                p = load_target(name, extra)
                rows.append({"name": p.name, "kind": p.kind, "description": p.description,
                             "default_variant": p.default_variant,
                             "variants": [v.name for v in p.variants]})
            if as_json:
                print_json({"ok": True, "targets": rows})
                return
            t = Table(title="target profiles")
            for col in ("name", "kind", "default", "variants", "description"):
                t.add_column(col)
            for r in rows:
                t.add_row(r["name"], r["kind"], r["default_variant"], ", ".join(r["variants"]),
                          escape(r["description"]))
            console.print(t)

    @targets.command("show")
    def show_cmd(
        name: str = typer.Argument(..., help="profile name or .toml path"),
        dirs: Optional[List[Path]] = typer.Option(None, "--dir", help=_DIR_HELP),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Show a profile: variants (passes + settings, backend), runtime options, budgets."""
        from edgemed.targets import load_target

        with handle_errors(as_json):
            p = load_target(name, [str(d) for d in dirs or []])
            if as_json:
                print_json({"ok": True, "target": _describe(p)})
                return
            console.print(f"[bold]{escape(p.name)}[/] ({p.kind}): {escape(p.description)}")
            console.print(f"host: {escape(str(p.host.model_dump()))}")
            console.print(f"runtime: {escape(str(p.runtime))}")
            console.print(f"budget: latency {p.budget.latency_ms} ms, "
                          f"memory {p.budget.memory_mb} MB")
            t = Table(title="variants")
            for col in ("variant", "backend", "passes"):
                t.add_column(col)
            for v in p.variants:
                passes = " -> ".join(f"{n}({', '.join(f'{k}={val}' for k, val in s.items())})"
                                     for n, s in v.pass_specs())
                mark = " (default)" if v.name == p.default_variant else ""
                be = v.backend + (f" (gate: {v.gate_backend})" if v.gate_backend else "")
                t.add_row(v.name + mark, be, escape(passes))
            console.print(t)

    @targets.command("check")
    def check_cmd(
        names: Optional[List[str]] = typer.Argument(None, help="profiles to check (default: all)"),
        dirs: Optional[List[Path]] = typer.Option(None, "--dir", help=_DIR_HELP),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Does this host match each target (can it time variants for it)? Which backends and
        execution providers are available here, and what is missing?"""
        from edgemed.targets import check_target, list_targets, load_target

        with handle_errors(as_json):
            extra = [str(d) for d in dirs or []]
            reports = [check_target(load_target(n, extra)) for n in (names or list_targets(extra))]
            if as_json:
                print_json({"ok": True, "checks": reports})
                return
            for r in reports:
                host = r["host"]
                mark = "[green]matches[/]" if host["matches"] else "[yellow]does not match[/]"
                console.print(f"[bold]{r['target']}[/]: this host {mark} ({escape(host['why'])})")
                t = Table(show_header=True)
                for col in ("variant", "backend", "here", "missing"):
                    t.add_column(col)
                for v in r["variants"]:
                    miss = list(v["missing"])
                    if v.get("build_missing"):
                        miss.append("to build: " + ", ".join(v["build_missing"]))
                    if v.get("providers", {}).get("missing"):
                        miss.append("EPs (chosen at run time): "
                                    + ", ".join(v["providers"]["missing"]))
                    if v.get("gpu") and not v["available"]:
                        miss.append(v["gpu"])
                    gate_only = f"gate only ({v.get('gate_backend')})"
                    here = "yes" if v["available"] else (
                        gate_only if v.get("gate_backend_available") else "no")
                    t.add_row(v["name"] + (" (default)" if v["default"] else ""), v["backend"],
                              here, escape("; ".join(miss)) or "-")
                console.print(t)
