"""``edgemed build --ray``: the gate's logits over a DICOM validation folder through Ray Data on a
real local cluster; the same gate verdicts and figures as the single-process build."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.errors import InvalidInputError
from edgemed.pipeline import BuildOptions, build

from .helpers import SPEC, dicom_set, tiny_onnx


def _gates(art) -> dict:
    """Every gated candidate's verdict and figures (the evaluator's description aside); the
    choice among passing ones depends on timing, so it is not compared."""
    sel = next(r for r in art.provenance if r.get("pass") == "select_variant")
    return {n: {k: v for k, v in (g or {}).items() if k != "evaluator"}
            for n, g in sel["candidates"].items()}


def test_build_gate_on_ray_equals_local(ray_cluster, tmp_path: Path) -> None:
    dicom_set(tmp_path / "val", 60, seed=1)
    dicom_set(tmp_path / "calib", 20, seed=2)
    model = tiny_onnx(tmp_path / "m.onnx", seed=4)
    kw = dict(calibration=tmp_path / "calib", validation=tmp_path / "val", target="cpu-x86",
              preprocess=SPEC, labels=("lesion", "no_lesion"), quiet=True)
    local = build(str(model), out=tmp_path / "local", options=BuildOptions(seed=0), **kw)
    dist = build(str(model), out=tmp_path / "ray", **kw,
                 options=BuildOptions(seed=0, ray=ray_cluster.address, ray_actors=2))
    a, b = _gates(local), _gates(dist)
    assert any(g.get("n") == 60 and g.get("reference") for g in a.values()), a
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True,
                                                                    default=str)
    # arrays cannot go through Ray Data: a typed refusal
    with pytest.raises(InvalidInputError) as e:
        build(str(model), out=tmp_path / "npy", calibration=tmp_path / "calib",
              validation=tmp_path / "calib.npy", target="cpu-x86", preprocess=SPEC, quiet=True,
              options=BuildOptions(ray=ray_cluster.address))
    assert e.value.code in ("bad-option", "not-found")


def test_build_cli_ray_option(ray_cluster, tmp_path: Path) -> None:
    dicom_set(tmp_path / "val", 40, seed=1)
    model = tiny_onnx(tmp_path / "m.onnx", seed=4)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "edgemed"), "build", "--model", str(model),
         "--out", str(tmp_path / "art"), "--input", "1x1x8x8", "--window", "40,400",
         "--calib", str(tmp_path / "val"), "--val", str(tmp_path / "val"), "--select", "default",
         "--ray", ray_cluster.address, "--ray-actors", "1", "--json"],
        env=ray_cluster.env, capture_output=True, text=True, timeout=900)
    assert out.stdout, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["gate"]["n"] == 40, out.stderr[-3000:]
