"""The device runtime installed alone: a fresh virtual environment with only ``pip install
./runtimes`` (numpy, pydicom, pillow, cryptography, onnxruntime; no torch, onnx, nncf, openvino)
opens and runs an artifact and a sealed bundle through ``python -m edgemed_runtime``. Slow: pip
downloads the runtime's dependencies from PyPI."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("venv") / "rt"
    venv.EnvBuilder(with_pip=True, clear=True).create(d)
    py = d / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(ROOT / "runtimes")], check=True, timeout=1200)
    return py


@pytest.fixture(scope="module")
def ort_artifact(tmp_path_factory: pytest.TempPathFactory, trained_tiny: Any,
                 synthetic_dir: Path, spec16: Any) -> Any:
    """The trained TinyNet built for cpu-x86, onnxruntime U8S8 variant (base runtime only)."""
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions

    return edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                         validation=synthetic_dir, target="cpu-x86",
                         out=tmp_path_factory.mktemp("ort") / "art",
                         labels=("no_lesion", "lesion"), preprocess=spec16,
                         options=BuildOptions(select="ort-int8-u8s8"))


def _run(py: Path, *args: str) -> tuple[int, Any]:
    proc = subprocess.run([str(py), "-m", "edgemed_runtime", *args, "--json"], capture_output=True,
                          text=True, timeout=600, cwd="/")
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {proc.returncode}): {proc.stdout[-500:]} "
                             f"{proc.stderr[-1500:]}") from None


def test_only_the_runtime_is_installed(runtime_venv: Path) -> None:
    code = ("import importlib.util as u, sys, edgemed_runtime\n"
            "print([m for m in ('torch', 'onnx', 'nncf', 'openvino', 'edgemed', 'typer') "
            "if u.find_spec(m)])")
    out = subprocess.run([str(runtime_venv), "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout.strip()
    assert out == "[]"


def test_runs_an_artifact_on_dicom(runtime_venv: Path, tmp_path: Path, ort_artifact: Any,
                                   trained_tiny: Any, synthetic_dir: Path, spec16: Any) -> None:
    import torch

    import edgemed
    from edgemed.pipeline import BuildOptions

    art = ort_artifact
    code, info = _run(runtime_venv, "info")
    assert code == 0 and {b["name"]: b["available"] for b in info["backends"]} == \
        {"onnxruntime": True, "openvino": False, "tensorrt": False, "executorch": False,
         "litert": False}  # the base runtime: only onnxruntime; the others are extras
    code, rep = _run(runtime_venv, "verify", str(art.path))
    assert code == 0 and rep["smoke_finite"] and rep["format"] == "onnx-qdq"
    code, res = _run(runtime_venv, "run", str(art.path), str(synthetic_dir / "SYN0000000"))
    assert code == 0 and res["ok"] and len(res["predictions"]) == 8
    assert {p["prediction"] for p in res["predictions"]} <= {"no_lesion", "lesion"}
    # an OpenVINO artifact here: refused with the package to install, not a stack trace
    ov = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                       validation=synthetic_dir, target="openvino-cpu", out=tmp_path / "ov",
                       labels=("no_lesion", "lesion"), preprocess=spec16,
                       options=BuildOptions(select="ov-fp32"))
    code, res = _run(runtime_venv, "verify", str(ov.path))
    assert code == 2 and res["error"]["code"] == "missing-extra"
    assert res["error"]["fix"] == "pip install 'edgemed-runtime[openvino]'"


def test_opens_a_sealed_bundle(runtime_venv: Path, tmp_path: Path, ort_artifact: Any,
                               synthetic_dir: Path) -> None:
    from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal

    keys = tmp_path / "keys"
    pub = generate_keypair(keys, kind="publisher", name="publisher")
    dev = generate_keypair(keys, kind="device", name="dev1")
    bundle = seal(ort_artifact, tmp_path / "b.edgemed", publisher_key=pub.private_path,
                  options=SealOptions(family="tiny", release=1),
                  recipients=[Recipient.load(dev.public_path)], archive=True)
    common = ["--trust", str(pub.public_path), "--device-key", str(dev.private_path),
              "--state-dir", str(tmp_path / "state")]
    code, rep = _run(runtime_venv, "verify", str(bundle), *common)
    assert code == 0 and rep["signature"] == "verified" and rep["smoke_finite"]
    code, res = _run(runtime_venv, "run", str(bundle), str(synthetic_dir / "SYN0000001"), *common)
    assert code == 0 and res["ok"] and len(res["predictions"]) == 8
    # a tampered bundle is refused with a typed error
    bad = tmp_path / "bad.edgemed"
    blob = bytearray(Path(bundle).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    code, res = _run(runtime_venv, "verify", str(bad), *common)
    assert code == 2 and res["ok"] is False
