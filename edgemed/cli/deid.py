"""``edgemed deid IN OUT``: de-identify DICOM with the PS3.15 Annex E Basic Profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
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
        consistently (keyed hash), keep pixels, set Patient Identity Removed."""
        import os

        from edgemed.dicom.deid import deidentify, load_key

        with handle_errors(as_json):
            one_off = key_file is None and not os.environ.get("EDGEMED_DEID_KEY")
            report = deidentify(src, out, key=load_key(key_file))
            d = report.to_dict()
            d["repeatable_uids"] = not one_off
            if as_json:
                print_json({"ok": True, **d})
                return
            t = Table(title="de-identification", show_header=False)
            t.add_column("field", style="bold")
            t.add_column("value")
            t.add_row("profile", d["profile"])
            t.add_row("written", str(d["written"]))
            t.add_row("skipped", str(len(d["skipped"])))
            t.add_row("output", d["output"])
            console.print(t)
            for s in d["skipped"][:20]:
                err_console.print(f"[yellow]skipped[/] {s['path']} ({s['code']})")
            if one_off:
                err_console.print("[yellow]note:[/] a one-off key was used; pass --key-file to get "
                                  "the same pseudonyms and UIDs on a later run")
