"""``edgemed evaluate --ray`` on a real local Ray cluster: the same metrics, CIs and gate verdict
as the single-process run; artifact folders shipped to the actors; a worker's typed error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemed.distributed import logits_local, logits_on_ray
from edgemed.errors import InvalidInputError

from .helpers import SPEC, dicom_set, int8_of, tiny_onnx

EDGEMED = str(Path(sys.executable).parent / "edgemed")


def _evaluate(env: dict[str, str], *args: str) -> tuple[int, dict]:
    out = subprocess.run([EDGEMED, "evaluate", *args, "--json"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.stdout, out.stderr[-2000:]
    return out.returncode, json.loads(out.stdout)


def _same(a: dict, b: dict) -> None:
    """Every figure equal; only the engine (where the logits came from) differs."""
    a, b = dict(a), dict(b)
    assert a.pop("engine")["ray"] is None and b.pop("engine")["ray"] is not None
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_evaluate_cli_ray_equals_local(ray_cluster, tmp_path: Path) -> None:
    dicom_set(tmp_path / "dicom", 60)
    ref = tiny_onnx(tmp_path / "ref.onnx", seed=3)
    cand = int8_of(ref, tmp_path / "cand.onnx")
    common = [str(cand), str(tmp_path / "dicom"), "--reference", str(ref), "--input", "1x1x8x8",
              "--window", "40,400"]
    rc_l, local = _evaluate(ray_cluster.env, *common)
    rc_r, dist = _evaluate(ray_cluster.env, *common, "--ray", ray_cluster.address,
                           "--actors", "2")
    assert rc_l == rc_r == 0 and local["gate"]["passed"]
    assert local["n"] == 60 and local["metrics"]["ci"]["accuracy"]
    _same(local, dist)
    # another model as the "candidate": the gate refuses it, exit 1 (gate-failed), both ways
    other = tiny_onnx(tmp_path / "other.onnx", seed=11)
    common[0] = str(other)
    rc_l, local = _evaluate(ray_cluster.env, *common)
    rc_r, dist = _evaluate(ray_cluster.env, *common, "--ray", ray_cluster.address)
    assert rc_l == rc_r == 1 and not local["gate"]["passed"] and local["gate"]["reasons"]
    _same(local, dist)


def test_artifact_folder_on_ray_and_worker_errors(ray_cluster, tmp_path: Path) -> None:
    from edgemed_runtime import Artifact, IOSpec

    files, _ = dicom_set(tmp_path / "dicom", 40)
    d = tmp_path / "art"
    tiny_onnx(d / "model.onnx", seed=5)
    Artifact(path=d, format="onnx", model_file="model.onnx",
             io=IOSpec(input_shape=(1, 1, 8, 8), labels=("lesion", "no_lesion")),
             preprocess=SPEC).save()
    local = logits_local(d, files)
    assert local.shape == (40, 2)
    assert (logits_on_ray(d, files, actors=2, batch_size=8) == local).all()
    # a file that is no DICOM: the worker's typed error reaches the driver as itself, named
    bad = tmp_path / "dicom" / "broken.dcm"
    bad.write_bytes(b"not a dicom file")
    with pytest.raises(InvalidInputError) as e:
        logits_on_ray(d, [*files[:5], bad], actors=1)
    assert "broken.dcm" in e.value.message and e.value.code
