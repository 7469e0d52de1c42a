"""``edgemed dataset build|inspect`` and ``edgemed deid``: thin commands, --json, exit 2 on bad input."""

from __future__ import annotations

import json

import pydicom
import typer
from typer.testing import CliRunner

from edgemed.cli import dataset as dataset_cli
from edgemed.cli import deid as deid_cli
from edgemed.data.synthetic import make_dataset


def _app() -> typer.Typer:
    app = typer.Typer()
    dataset_cli.register(app)
    deid_cli.register(app)
    return app


def test_dataset_build_and_inspect(tmp_path):
    syn = make_dataset(tmp_path / "syn", n_patients=6, slices_per_patient=3, size=32, seed=2)
    runner = CliRunner()
    res = runner.invoke(_app(), ["dataset", "build", str(syn.root), "--out", str(tmp_path / "ds"),
                                 "--calib", "4", "--size", "32", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["ok"] and d["report"]["leak_check"]["ok"] and len(d["calibration"]["indices"]) == 4
    res = runner.invoke(_app(), ["dataset", "inspect", str(tmp_path / "ds")])
    assert res.exit_code == 0 and "leak check: passed" in res.output and "scanner" in res.output
    res = runner.invoke(_app(), ["dataset", "inspect", str(tmp_path / "nope"), "--json"])
    assert res.exit_code == 2 and json.loads(res.output)["error"]["code"] == "not-found"
    res = runner.invoke(_app(), ["dataset", "build", str(syn.root), "--out", str(tmp_path / "x"),
                                 "--modality", "MR", "--no-decode"])
    assert res.exit_code == 2 and "no files left" in res.output


def test_deid_command(tmp_path):
    syn = make_dataset(tmp_path / "syn", n_patients=2, slices_per_patient=2, size=16, seed=1)
    key = tmp_path / "key"
    key.write_text("ab" * 32)
    runner = CliRunner()
    res = runner.invoke(_app(), ["deid", str(syn.root), str(tmp_path / "out"), "--key-file", str(key), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["written"] == 4 and d["repeatable_uids"]
    out = pydicom.dcmread(tmp_path / "out" / syn.paths[0].relative_to(syn.root))
    assert out.PatientIdentityRemoved == "YES" and "Synthetic" not in str(out.PatientName)
    res = runner.invoke(_app(), ["deid", str(tmp_path / "missing"), str(tmp_path / "o2")])
    assert res.exit_code == 2


def test_deid_command_reports_failed_files_and_exits_1(tmp_path):
    from . import hostile

    syn = make_dataset(tmp_path / "syn", n_patients=1, slices_per_patient=3, size=16, seed=4)
    hostile.preamble_only(syn.root / "preamble_only.dcm")
    hostile.truncated(syn.root / "truncated.dcm", 0.6)
    key = tmp_path / "key"
    key.write_text("cd" * 32)
    runner = CliRunner()
    args = ["deid", str(syn.root), str(tmp_path / "out"), "--key-file", str(key)]
    res = runner.invoke(_app(), args + ["--json"])
    assert res.exit_code == 1, res.output
    d = json.loads(res.output)
    assert not d["ok"] and d["written"] == 3
    assert {f["path"]: f["code"] for f in d["failed"]} == {"preamble_only.dcm": "truncated",
                                                            "truncated.dcm": "declared-length"}
    assert len([p for p in (tmp_path / "out").rglob("*.dcm")]) == 3
    res = runner.invoke(_app(), ["deid", str(syn.root), str(tmp_path / "out2"), "--key-file", str(key)])
    assert res.exit_code == 1
    assert "preamble_only.dcm (truncated)" in res.output and "2 file(s) could not" in res.output
