"""``edgemed evaluate`` in this process: metrics with CIs on a labelled DICOM folder, the gate
against a reference (exit 1 when it fails), skipped non-DICOM files, typed refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemed.cli import app
from edgemed.distributed.folder_eval import evaluate_folder
from edgemed.evaluate import GateConfig, clinical_report, run_gate

from tests.ray.helpers import SPEC, dicom_set, int8_of, tiny_onnx


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval")
    dicom_set(d / "dicom", 40)
    ref = tiny_onnx(d / "ref.onnx", seed=3)
    return {"dir": d, "dicom": d / "dicom", "ref": ref, "cand": int8_of(ref, d / "cand.onnx"),
            "other": tiny_onnx(d / "other.onnx", seed=11)}


def _run(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, ["evaluate", *args, "--json"])
    return res.exit_code, json.loads(res.stdout)


def test_metrics_and_gate_are_the_sdks(data: dict[str, Path]) -> None:
    from edgemed_runtime.sdk import softmax

    from edgemed.dicom.folder import load_folder
    from edgemed.distributed import logits_local

    rc, doc = _run(str(data["cand"]), str(data["dicom"]), "--reference", str(data["ref"]),
                   "--input", "1x1x8x8", "--window", "40,400")
    assert rc == 0 and doc["ok"] and doc["n"] == 40 and doc["skipped"] == 0
    # the same figures as the SDK's functions on the folder as the build loads it
    la = load_folder(data["dicom"], SPEC)
    lc = logits_local(data["cand"], la.paths, preprocess=SPEC)
    lr = logits_local(data["ref"], la.paths, preprocess=SPEC)
    rep = clinical_report(softmax(lc.astype(np.float64)), la.y, la.class_names)
    assert doc["metrics"]["overall"] == rep["overall"]
    assert {k: list(v) for k, v in rep["ci"].items()} == doc["metrics"]["ci"]
    gate = json.loads(json.dumps(run_gate(lr, lc, la.y, GateConfig()).to_dict()))
    assert doc["gate"] == gate and gate["passed"]
    rc, doc = _run(str(data["other"]), str(data["dicom"]), "--reference", str(data["ref"]),
                   "--input", "1x1x8x8", "--window", "40,400")
    assert rc == 1 and not doc["gate"]["passed"] and doc["exit_code"] == 1


def test_skips_non_dicom_without_suffix(data: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "by_class"
    for i, p in enumerate(sorted(data["dicom"].rglob("*.dcm"))[:20]):
        (d / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / ("a" if i % 2 else "b") / f"{i}.dcm")
    (d / "a" / "README").write_text("not an image")
    res = evaluate_folder(data["ref"], d, preprocess=SPEC)
    assert res.n == 20 and res.skipped == 1 and res.class_names == ("a", "b")


def test_typed_refusals(data: dict[str, Path], tmp_path: Path) -> None:
    rc, doc = _run(str(tmp_path / "missing.onnx"), str(data["dicom"]))
    assert rc == 2 and doc["error"]["code"] == "not-found"
    (tmp_path / "empty").mkdir()
    rc, doc = _run(str(data["ref"]), str(tmp_path / "empty"))
    assert rc == 2 and doc["error"]["code"] == "empty"
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted(data["dicom"].rglob("*.dcm"))[:4]):
        (flat / f"{i}.dcm").write_bytes(p.read_bytes())
    rc, doc = _run(str(data["ref"]), str(flat))
    assert rc == 2 and doc["error"]["code"] == "needs-labels"
    pytest.importorskip("ray")
    rc, doc = _run(str(data["ref"]), str(data["dicom"]), "--ray", "127.0.0.1:9")
    assert rc == 2 and doc["error"]["code"] == "ray-unreachable"


def test_window_option_is_parsed_once_for_every_command() -> None:
    """--window CENTER,WIDTH: two floats, or bad-option (build, search and evaluate share it)."""
    from edgemed.cli.common import parse_window
    from edgemed.errors import InvalidInputError

    assert parse_window(None) is None and parse_window("40,400") == (40.0, 400.0)
    with pytest.raises(InvalidInputError) as e:
        parse_window("40")
    assert e.value.code == "bad-option" and e.value.expected == "CENTER,WIDTH"
