"""``edgemed deid IN OUT``: de-identify DICOM with the PS3.15 Annex E Basic Profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, err_console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def deid(
        src: Path = typer.Argument(..., metavar="IN", help="a DICOM file or a folder of them"),
        out: Path = typer.Argument(..., metavar="OUT", help="output file or folder (mirrors IN)"),
        key_file: Optional[Path] = typer.Option(
            None, "--key-file", help="HMAC key for UID/ID remapping (else $EDGEMED_DEID_KEY, else a "
            "one-off random key: remapping is then not repeatable across runs)"),
        as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Remove / empty / replace the Basic Profile attributes, drop private tags, remap UIDs
        consistently (keyed hash), keep pixels, set Patient Identity Removed.

        A folder is written to a staging folder renamed to OUT at the end. Files that fail are
        listed (relative path, error code) and left out; the exit code is then 1."""
        import os

        from edgemed.dicom.deid import deidentify, load_key

        with handle_errors(as_json):
            one_off = key_file is None and not os.environ.get("EDGEMED_DEID_KEY")
            report = deidentify(src, out, key=load_key(key_file))
            d = report.to_dict()
            d["repeatable_uids"] = not one_off
            if as_json:
                print_json({"ok": report.ok, **d})
            else:
                t = Table(title="de-identification", show_header=False)
                t.add_column("field", style="bold")
                t.add_column("value")
                t.add_row("profile", d["profile"])
                t.add_row("written", str(d["written"]))
                t.add_row("failed", str(len(d["failed"])))
                t.add_row("skipped (not DICOM)", str(len(d["skipped"])))
                t.add_row("output", d["output"])
                console.print(t)
                for s in d["failed"][:50]:
                    err_console.print(f"[red]failed[/] {escape(s['path'])} ({s['code']})")
                if len(d["failed"]) > 50:
                    err_console.print(f"[red]failed[/] ... and {len(d['failed']) - 50} more (--json lists all)")
                for s in d["skipped"][:20]:
                    err_console.print(f"[yellow]skipped[/] {escape(s['path'])} ({s['code']})")
                if one_off:
                    err_console.print("[yellow]note:[/] a one-off key was used; pass --key-file to get "
                                      "the same pseudonyms and UIDs on a later run")
                if not report.ok:
                    err_console.print(f"[bold red]error:[/] {len(d['failed'])} file(s) could not be "
                                      "de-identified and were left out (listed above)")
        if not report.ok:
            raise typer.Exit(1)
