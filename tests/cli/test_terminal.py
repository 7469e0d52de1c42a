"""Terminal output: tables are not cut when piped, log lines carry no file:line, --help has no
<bool> after flags, every --json option is described, errors speak CLI, edgemed-run prints
tables by default and JSON with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import typer
from typer.testing import CliRunner

from edgemed.cli import app
from edgemed.cli.common import cli_words

ROOT = Path(__file__).resolve().parents[2]
LONG = "ov-qdq-u8s8-with-a-variant-name-long-enough-to-be-cut-at-eighty-columns"

_RENDER = f"""
from pathlib import Path
from edgemed.cli.release import render_release
from edgemed.release.flow import ReleaseResult, TargetOutcome
o = TargetOutcome("cpu-x86", status="released", chosen={LONG!r}, size_bytes=1234567,
                  device_install="pip install 'edgemed-runtime[openvino]'",
                  device_check={{"ok": True}}, latency="unmeasured: host is not the target")
render_release(ReleaseResult(Path("rel"), {{}}, [o], Path("rel/report.html"), 1.0))
from edgemed.cli.common import progress_callback
with progress_callback("release") as say:
    say("a progress line")
"""


def _piped(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**e, "PYTHONPATH": str(ROOT), **env}, timeout=120)


def test_piped_table_is_not_truncated_and_logs_have_no_path() -> None:
    r = _piped(_RENDER)
    assert r.returncode == 0, r.stderr[-1500:]
    assert LONG in r.stdout and "…" not in r.stdout
    assert "pip install 'edgemed-runtime[openvino]'" in r.stdout
    assert "a progress line" in r.stderr and "common.py:" not in r.stderr
    assert ".py:" not in r.stderr


def test_columns_wins_when_set() -> None:
    r = _piped("from edgemed.cli.common import console; print(console.width)", COLUMNS="123")
    assert r.stdout.strip() == "123"


def _commands(cmd: Any, path: str = "edgemed") -> Iterator[tuple[str, Any]]:
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_help_has_no_bool_metavar_and_every_json_option_is_described() -> None:
    root = typer.main.get_command(app)
    checked = 0
    for path, cmd in _commands(root):
        args = path.split()[1:] + ["--help"]
        out = CliRunner().invoke(app, args, terminal_width=200).output
        assert "<bool>" not in out, path
        for p in cmd.params:
            if "--json" in getattr(p, "opts", ()):
                checked += 1
                assert getattr(p, "help", None), f"{path} --json has no description"
    assert checked >= 10


def test_errors_in_cli_words() -> None:
    assert cli_words("expected: device_key=<device private key>") == \
        "expected: --device-key <device private key>"
    assert cli_words("pass hardware_id=, or ask") == "pass --hardware-id, or ask"
    assert cli_words("trust=<publisher .pub>") == "--trust <publisher .pub>"
    assert cli_words("monai:DenseNet121 spatial_dims=2 k=v") == "monai:DenseNet121 spatial_dims=2 k=v"
    assert cli_words("a plain sentence, 1 = 1") == "a plain sentence, 1 = 1"


def test_edgemed_run_tables_by_default_json_with_flag() -> None:
    run = [sys.executable, "-m", "edgemed_runtime", "info"]
    human = subprocess.run(run, capture_output=True, text=True, cwd="/", timeout=120)
    assert human.returncode == 0 and human.stdout.splitlines()[1].startswith("backend")
    assert "onnxruntime" in human.stdout and not human.stdout.lstrip().startswith("{")
    js = subprocess.run([*run, "--json"], capture_output=True, text=True, cwd="/", timeout=120)
    assert js.returncode == 0 and json.loads(js.stdout)["ok"] is True
    bad = subprocess.run([sys.executable, "-m", "edgemed_runtime", "run", "/no/such", "x.dcm"],
                         capture_output=True, text=True, cwd="/", timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "error [not-found]" in bad.stderr and "Traceback" not in bad.stderr
