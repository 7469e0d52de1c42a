"""The ``edgemed`` command line: thin typer commands over the Python API, rendered with rich.

Each command module defines ``register(app)``; ``MODULES`` lists them. Exit codes: one meaning
each, edgemed_runtime.exit_codes (docs/cli.md "Exit codes").
"""

from __future__ import annotations

import importlib
import sys

import typer

from .common import console, err_console, interrupted, render_error

app = typer.Typer(
    name="edgemed",
    help="From a trained medical-imaging model to verified INT8 artifacts and bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODULES = ("build", "predict", "inspect", "demo", "release", "bundle", "dataset", "deid", "targets", "bench", "report", "search", "evaluate")


def _register_all() -> None:
    for name in MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        mod.register(app)


_register_all()


def main() -> None:
    """Console-script entry point: exit codes from edgemed_runtime.exit_codes (docs/cli.md);
    Ctrl-C anywhere (even while imports run) prints "interrupted" and exits 130."""
    from edgemed.errors import EdgemedError

    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(interrupted().exit_code)
    except typer.exceptions.TyperException as exc:  # usage errors: shown as click shows them
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", 2))
    except EdgemedError as exc:  # commands render their own; this is the last net
        render_error(exc)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "console", "main"]
