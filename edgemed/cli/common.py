"""Shared CLI helpers: consoles, error rendering, JSON output."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import IO, Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


_JSON_OUT: list[IO[str]] = []


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on the real stdout (for ``--json``), even inside handle_errors."""
    out = _JSON_OUT[-1] if _JSON_OUT else sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    out.flush()


@contextmanager
def handle_errors(as_json: bool = False) -> Iterator[None]:
    """Turn EdgemedError into a clear message and its exit code (1 gate, 2 bad input).

    With ``as_json``, anything libraries print to stdout (progress bars) goes to stderr so
    stdout holds exactly one JSON document.
    """
    from edgemed.errors import EdgemedError

    if as_json:
        _JSON_OUT.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr) if as_json else nullcontext():
            yield
    except EdgemedError as exc:
        if as_json:
            print_json({"ok": False, "error": exc.to_dict()})
        else:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
    finally:
        if as_json:
            _JSON_OUT.pop()


@contextmanager
def progress_callback(title: str, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A rich spinner whose text follows ``say(message)``; silent when ``quiet``."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if quiet:
        yield lambda msg: None
        return
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as prog:
        task = prog.add_task(title, total=None)

        def say(msg: str) -> None:
            prog.update(task, description=f"{title}: {msg}")
            prog.console.log(msg)

        yield say
