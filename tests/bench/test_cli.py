"""``edgemed bench`` / ``edgemed report`` through typer: JSON output, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgemed.cli import bench as bench_cli
from edgemed.cli import report as report_cli

FAST = ["--runs", "3", "--warmup", "1", "--processes", "1", "--cold", "1", "--no-ceilings",
        "--dicom", "none"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer(pretty_exceptions_enable=False)
    bench_cli.register(a)
    report_cli.register(a)
    return a


def _profile(tmp_path: Path, latency_ms: float) -> Path:
    src = (Path(__file__).resolve().parents[2] / "targets" / "cpu-x86.toml").read_text()
    p = tmp_path / f"budget-{latency_ms}.toml"
    p.write_text(src.replace("latency_ms = 100", f"latency_ms = {latency_ms}"))
    return p


def test_json_output_and_budget_exit_codes(app, tiny_artifact, bench_cache, tmp_path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["bench", str(tiny_artifact.path), *FAST, "--json",
                             "--target", str(_profile(tmp_path, 100000)),
                             "--save", str(tmp_path / "r.json")])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["budget"]["checked"] and not data["budget"]["exceeded"]
    assert json.loads((tmp_path / "r.json").read_text())["order"] == data["order"]
    over = runner.invoke(app, ["bench", str(tiny_artifact.path), *FAST, "--json",
                               "--target", str(_profile(tmp_path, 1e-6)), "--enforce-budget"])
    assert over.exit_code == 3  # budget-exceeded, only because it was asked for
    b = json.loads(over.stdout)["budget"]
    assert b["exceeded"] and b["enforced"] and "latency" in b["reasons"][0]
    assert "[budget]" in b["source"]


def test_tables_are_printed(app, tiny_artifact, bench_cache) -> None:
    res = CliRunner().invoke(app, ["bench", str(tiny_artifact.path), *FAST])
    assert res.exit_code == 0, res.output
    for text in ("Warm latency", "Cold start", "Ratios", "Other processes used"):
        assert text in res.stdout


@pytest.mark.parametrize("args,code", [
    (["bench", "/no/such/model"], "not-found"),
    (["bench", "{tmp}/notes.txt"], "not-a-model"),
    (["bench", "{art}", "--batch", "a,b"], "bad-option"),
    (["bench", "{art}", "--runs", "0"], "bad-option"),
    (["bench", "{art}", "--target", "no-such-target"], "unknown-target"),
    (["report", "{tmp}/notes.txt"], "not-a-result"),
    (["report", "{tmp}/missing.json"], "not-a-result"),
])
def test_bad_input_exit_2_with_a_typed_error(app, tiny_artifact, tmp_path, args, code) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    args = [a.format(tmp=tmp_path, art=tiny_artifact.path) for a in args]
    res = CliRunner().invoke(app, [*args, "--json", "-o" if args[0] == "report" else "--dicom",
                                   str(tmp_path / "out") if args[0] == "report" else "none"])
    assert res.exit_code == 2, res.output
    err = json.loads(res.stdout)["error"]
    assert err["code"] == code and err["expected"]
    assert not (tmp_path / "out" / "report.html").exists()
