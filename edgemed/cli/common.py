"""Shared CLI helpers: consoles, error rendering, JSON output, Ctrl-C, help without ``<bool>``."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import IO, Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape

WIDE = 200
"""Console width when output is not a terminal (piped, redirected, captured): wide enough that
tables are not cut at 80 columns; ``$COLUMNS`` wins when set."""


def make_console(*, stderr: bool = False) -> Console:
    """A rich Console: the terminal's width on a TTY, else ``$COLUMNS`` or WIDE; log lines
    without the ``file.py:NN`` of the caller."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    cols = os.environ.get("COLUMNS", "")
    width = None if tty else (int(cols) if cols.isdigit() and int(cols) > 0 else WIDE)
    return Console(stderr=stderr, width=width, log_path=False)


console = make_console()
err_console = make_console(stderr=True)


def _flags_show_no_type() -> None:
    """``--help`` shows no ``<bool>`` after flags (they take no value): typer's option type
    column is empty for flags."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_edgemed", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._edgemed = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()

_KWARG = re.compile(r"(?<![\w-])([a-z][a-z0-9_]*)=(<[^>]*>|(?=[\s,;)]|$))")


def cli_words(text: str) -> str:
    """Python keyword syntax in a message as CLI options: ``device_key=<device private key>``
    -> ``--device-key <device private key>``, ``pass hardware_id=`` -> ``pass --hardware-id``;
    a keyword with a value (``spatial_dims=2`` in a model spec) is left as it is."""
    return _KWARG.sub(lambda m: "--" + m[1].replace("_", "-") + (f" {m[2]}" if m[2] else ""),
                      text)


def parse_window(window: str | None) -> tuple[float, float] | None:
    """``--window CENTER,WIDTH`` as two floats (None when not given).

    Raises:
        InvalidInputError: ``bad-option``, not two numbers.
    """
    if not window:
        return None
    from edgemed.errors import InvalidInputError

    try:
        c, w = (float(v) for v in window.split(","))
    except ValueError:
        raise InvalidInputError("cannot parse --window", expected="CENTER,WIDTH", found=window,
                                fix="e.g. --window 40,400", code="bad-option") from None
    return c, w


def render_error(exc: Any) -> None:
    """Print an EdgemedError on stderr in CLI words (code, message, expected, found, fix)."""
    err_console.print(f"[bold red]error:[/] {escape(cli_words(str(exc)))}")


def interrupted(as_json: bool = False) -> typer.Exit:
    """Say "interrupted" (stderr; with ``as_json`` also a JSON document on stdout) and return
    the exit (130) to raise."""
    from edgemed_runtime.sdk import ExitCode

    err_console.print("[bold yellow]interrupted[/]")
    if as_json:
        print_json({"ok": False, "interrupted": True, "exit_code": int(ExitCode.INTERRUPTED)})
    return typer.Exit(int(ExitCode.INTERRUPTED))


JSON_HELP = "print the result as one JSON document on stdout (for scripts)"
"""The description of every ``--json`` option."""

_JSON_OUT: list[IO[str]] = []


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on the real stdout (for ``--json``), even inside handle_errors."""
    out = _JSON_OUT[-1] if _JSON_OUT else sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    out.flush()


@contextmanager
def handle_errors(as_json: bool = False) -> Iterator[None]:
    """Turn EdgemedError into a clear message and its exit code (edgemed_runtime.exit_codes),
    and Ctrl-C into "interrupted" and exit 130 (no traceback).

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
            render_error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise interrupted(as_json) from None
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
