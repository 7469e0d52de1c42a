"""Exit codes mean one thing each: docs/cli.md holds exactly the table edgemed_runtime.exit_codes
generates; a release's exit code follows its targets' states (the demo exits with it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed.release.flow import ReleaseResult, TargetOutcome
from edgemed_runtime.exit_codes import EXIT_CODES, ExitCode, markdown

ROOT = Path(__file__).resolve().parents[2]


def test_docs_hold_the_generated_table() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert markdown() in doc
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "`" in line
            and line.split("|")[1].strip().isdigit()]
    assert len(rows) == len(EXIT_CODES)


def test_codes_and_names_are_unique() -> None:
    names = [n for n, _ in EXIT_CODES.values()]
    assert len(set(names)) == len(names) == len(ExitCode)
    assert set(EXIT_CODES) == set(ExitCode)


def _result(*statuses: str, interrupted: bool = False) -> ReleaseResult:
    return ReleaseResult(Path("rel"), {}, [TargetOutcome(f"t{i}", status=s)
                                           for i, s in enumerate(statuses)], None, 1.0,
                         interrupted={"target": "t0", "step": "build"} if interrupted else None)


@pytest.mark.parametrize("statuses,code", [
    (("released", "fallback-fp32"), ExitCode.OK),
    (("released", "gate-failed"), ExitCode.GATE_FAILED),
    (("gate-failed",), ExitCode.GATE_FAILED),
    (("released", "failed"), ExitCode.FAILED),
    (("gate-failed", "failed"), ExitCode.FAILED),
])
def test_release_exit_code_follows_the_targets(statuses: tuple[str, ...], code: int) -> None:
    r = _result(*statuses)
    assert r.exit_code == code and r.to_dict()["exit_code"] == code
    assert r.ok is (code == ExitCode.OK)


def test_interrupted_release_is_130_whatever_finished() -> None:
    r = _result("released", "interrupted", interrupted=True)
    assert r.exit_code == 130 and not r.ok and r.to_dict()["interrupted"]["step"] == "build"


def test_error_exit_codes() -> None:
    from edgemed.errors import GateError, InvalidInputError
    from edgemed.release.lock import BusyError

    assert GateError("x").exit_code == ExitCode.GATE_FAILED
    assert InvalidInputError("x").exit_code == ExitCode.BAD_INPUT
    assert BusyError("x").exit_code == ExitCode.BUSY
