"""The ``edgemed`` command line: thin typer commands over the Python API, rendered with rich.

Each command module defines ``register(app)``; ``MODULES`` lists them. Exit codes: 0 success,
1 accuracy gate failed (or a budget exceeded), 2 bad input / refused (any other EdgemedError).
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

from .common import console, err_console

app = typer.Typer(
    name="edgemed",
    help="From a trained medical-imaging model to verified INT8 artifacts and bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODULES = ("build", "predict", "inspect", "demo", "release", "bundle", "dataset", "deid", "targets", "bench", "report", "search")


def _register_all() -> None:
    for name in MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        mod.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    from edgemed.errors import EdgemedError

    try:
        app()
    except EdgemedError as exc:  # commands render their own; this is the last net
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)


__all__ = ["app", "console", "main"]
