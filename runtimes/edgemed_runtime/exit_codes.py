"""The exit codes of ``edgemed`` and ``edgemed-run``: one meaning each, in one place.

``python -m edgemed_runtime.exit_codes`` prints the table of docs/cli.md ("Exit codes");
tests/cli/test_exit_codes.py checks that the document holds exactly that table.
"""

from __future__ import annotations

import sys
from enum import IntEnum



class ExitCode(IntEnum):
    """The exit status of a command (see EXIT_CODES for what each means)."""

    OK = 0
    GATE_FAILED = 1
    BAD_INPUT = 2
    BUDGET_EXCEEDED = 3
    PARTIAL = 4
    FAILED = 5
    BUSY = 6
    INTERRUPTED = 130


OK, GATE_FAILED, BAD_INPUT, BUDGET_EXCEEDED, PARTIAL, FAILED, BUSY, INTERRUPTED = ExitCode

EXIT_CODES: dict[ExitCode, tuple[str, str]] = {
    OK: ("ok", "everything asked for was done (a release: every target shipped, "
               "`released` or `fallback-fp32`)"),
    GATE_FAILED: ("gate-failed", "the accuracy gate refused the compressed model (`build`; a "
                                 "`release` or `demo` whose targets shipped or failed the gate "
                                 "only); nothing was shipped for that target"),
    BAD_INPUT: ("bad-input", "refused before or while reading the input: bad option, file, "
                             "config, DICOM, a bundle that does not verify, a missing package"),
    BUDGET_EXCEEDED: ("budget-exceeded", "`bench --budget-ms` / `--enforce-budget`: the latency "
                                         "or memory budget was exceeded"),
    PARTIAL: ("partial", "some inputs failed and the others succeeded (`edgemed-run run`, "
                         "`predict` over a folder): the output lists each failure"),
    FAILED: ("failed", "a step failed for another reason than the gate (export, backend, seal, "
                       "device check): a `release` or `demo` target `failed`"),
    BUSY: ("busy", "another run holds the lock of the release folder or registry (wait, or "
                   "pass `--wait`)"),
    INTERRUPTED: ("interrupted", "stopped by Ctrl-C / SIGINT: no partial output left, the "
                                 "interruption recorded"),
}
"""code -> (name, meaning)."""


def markdown() -> str:
    """The table of docs/cli.md's "Exit codes" section."""
    rows = ["| code | name | meaning |", "|---|---|---|"]
    rows += [f"| {int(c)} | `{n}` | {m} |" for c, (n, m) in sorted(EXIT_CODES.items())]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
