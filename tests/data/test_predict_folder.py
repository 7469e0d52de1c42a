"""``predict`` over a folder as users hold it: one row per file (named), the run goes on past a
bad file, a summary and an exit code; a file of the artifact folder stands for the folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgemed.cli import app
from edgemed.predict import EXIT_BAD_INPUT, EXIT_PARTIAL, predict_files


@pytest.fixture()
def mixed(tmp_path: Path, synthetic_dir: Path) -> Path:
    """Two patients' good files, a .dcm that is no DICOM, a README and a DICOMDIR-like stub."""
    root = tmp_path / "study"
    for pid in sorted(d.name for d in synthetic_dir.iterdir() if d.is_dir())[:2]:
        shutil.copytree(synthetic_dir / pid, root / pid)
    (root / "broken.dcm").write_bytes(b"\0" * 300)
    (root / "README").write_text("exported by the PACS\n")
    return root


def test_folder_rows_per_file_and_partial_exit(tiny_artifact, mixed: Path) -> None:
    res = predict_files(tiny_artifact.path, [mixed])
    by_name = {Path(r["file"]).name: r for r in res.rows}
    assert by_name["broken.dcm"]["status"] == "failed"
    assert by_name["broken.dcm"]["error"]["code"] == "not-dicom"
    assert by_name["README"]["status"] == "skipped"
    ok = [r for r in res.rows if r["status"] == "ok"]
    assert len(ok) == 16 and all(set(r["probabilities"]) == {"no_lesion", "lesion"} for r in ok)
    s = res.summary()
    assert (s["files"], s["ok"], s["failed"], s["skipped"]) == (18, 16, 1, 1)
    assert res.exit_code == EXIT_PARTIAL


def test_cli_names_the_bad_file_goes_on_and_exits_partial(tiny_artifact, mixed: Path) -> None:
    r = CliRunner().invoke(app, ["predict", str(tiny_artifact.path), str(mixed), "--json"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["failed"] == 1 and doc["summary"]["ok"] == 16
    failed = [p for p in doc["predictions"] if p["status"] == "failed"]
    assert [Path(p["file"]).name for p in failed] == ["broken.dcm"]
    r = CliRunner().invoke(app, ["predict", str(tiny_artifact.path), str(mixed)])
    assert r.exit_code == EXIT_PARTIAL
    assert "broken.dcm" in r.stdout and "16 of 18 file(s) predicted, 1 failed" in r.stdout


def test_exit_codes_match_the_documented_table() -> None:
    codes = pytest.importorskip("edgemed_runtime.exit_codes")
    assert EXIT_PARTIAL == int(codes.ExitCode.PARTIAL)
    assert EXIT_BAD_INPUT == int(codes.ExitCode.BAD_INPUT)


def test_only_bad_files_is_bad_input(tiny_artifact, tmp_path: Path) -> None:
    bad = tmp_path / "x.dcm"
    bad.write_text("hello")
    res = predict_files(tiny_artifact.path, [bad, tmp_path / "missing.dcm"])
    assert [r["error"]["code"] for r in res.rows] == ["not-dicom", "not-found"]
    assert res.exit_code == EXIT_BAD_INPUT


def test_a_file_of_the_artifact_folder_stands_for_the_folder(tiny_artifact, synthetic_dir: Path) -> None:
    one = next(synthetic_dir.rglob("*.dcm"))
    wrong = tiny_artifact.path / "model.ovir"  # the README's path when another format was chosen
    res = predict_files(wrong, [one])
    assert res.model == tiny_artifact.path and res.exit_code == 0
    assert str(tiny_artifact.path) in res.note and tiny_artifact.model_file in res.note
    r = CliRunner().invoke(app, ["predict", str(wrong), str(one)])
    assert r.exit_code == 0 and "note:" in r.stdout


def test_runtime_open_in_a_fresh_process_without_build(tiny_artifact, synthetic_dir: Path) -> None:
    """``edgemed.runtime.open`` right after ``import edgemed`` (no build() in the process), with
    the artifact folder and with a file inside it."""
    one = next(synthetic_dir.rglob("*.dcm"))
    code = ("import sys, edgemed\n"
            "for p in sys.argv[1:3]:\n"
            "    with edgemed.runtime.open(p) as s:\n"
            "        print(s.labels, s.predict(sys.argv[3]).shape)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_artifact.path),
                          str(tiny_artifact.path / "model.onnx"), str(one)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("('no_lesion', 'lesion') (1, 2)") == 2
