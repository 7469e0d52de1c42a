"""What the device must install: bundle.json ``requires`` is declared by the build, checked by the
runtime with the exact install line, and the device check's environment holds only the runtime
and that extra: a runtime-only venv runs an onnxruntime bundle and refuses an OpenVINO one with
``pip install 'edgemed-runtime[openvino]'``; the venv with that extra runs it; the release's
device check runs there and its table says what the device installs. The venv tests are slow
(pip installs from the package index; the environments are cached and reused)."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgemed.errors import MissingDependencyError, ProfileError
from edgemed.release.device_env import device_python, env_key, for_device_runtime
from edgemed_runtime.bundle.requirements import (
    DeviceRequirements,
    check_requirements,
    installed_version,
    requirements_for,
    unmet,
)
from edgemed_runtime.sdk import backend_class, backend_names

ROOT = Path(__file__).resolve().parents[2]


def test_backend_extras_match_the_runtime_package() -> None:
    extras = tomllib.loads((ROOT / "runtimes" / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for backend in backend_names():
        pkgs, extra = backend_class(backend).requires, backend_class(backend).extra
        if extra is None:
            deps = tomllib.loads((ROOT / "runtimes" / "pyproject.toml").read_text())["project"][
                "dependencies"]
            assert all(any(d.startswith(p) for d in deps) for p in pkgs), backend
        else:
            assert all(any(d.startswith(p) for d in extras[extra]) for p in pkgs), backend


def test_requirements_name_the_install_line() -> None:
    ov = requirements_for("openvino")
    assert ov.extras == ("openvino",) and ov.install_line == "pip install 'edgemed-runtime[openvino]'"
    assert ov.packages["openvino"] == ".".join(installed_version("openvino").split(".")[:3])
    assert requirements_for("onnxruntime").install_line == "pip install edgemed-runtime"
    assert DeviceRequirements.from_dict(ov.to_dict()) == ov
    check_requirements(ov)  # this host has them
    future = DeviceRequirements("onnxruntime", (), {"onnxruntime": "999.0.0"})
    assert unmet(future) and "needs >= 999.0.0" in unmet(future)[0]
    with pytest.raises(MissingDependencyError) as ei:
        check_requirements(future)
    assert ei.value.code == "missing-extra"
    assert ei.value.fix == "pip install --upgrade 'edgemed-runtime' 'onnxruntime>=999.0.0'"
    assert env_key(ov) != env_key(requirements_for("onnxruntime"))


def test_base_device_runtime_keeps_only_onnxruntime_variants() -> None:
    from edgemed.targets import load_target

    x86 = for_device_runtime(load_target("cpu-x86"), "base")
    assert x86.variants and {v.backend for v in x86.variants} == {"onnxruntime"}
    assert x86.default_variant in {v.name for v in x86.variants}
    assert for_device_runtime(load_target("cpu-x86"), "any") == load_target("cpu-x86")
    with pytest.raises(ProfileError) as ei:
        for_device_runtime(load_target("openvino-cpu"), "base")
    assert ei.value.code == "base-runtime-unsupported"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Any, trained_tiny: Any,
            synthetic_dir: Path, spec16: Any) -> dict[str, Path]:
    """The tiny onnxruntime artifact and an OpenVINO one, each sealed for one device."""
    import torch

    import edgemed
    from edgemed.bundle import Recipient, SealOptions, generate_keypair, seal
    from edgemed.pipeline import BuildOptions

    d = tmp_path_factory.mktemp("dev-env")
    ov = edgemed.build(trained_tiny, torch.zeros(1, 1, 16, 16), calibration=synthetic_dir,
                       validation=synthetic_dir, target="openvino-cpu", out=d / "ov",
                       labels=("no_lesion", "lesion"), preprocess=spec16,
                       options=BuildOptions(select="ov-fp32"))
    pub = generate_keypair(d / "keys", kind="publisher", name="publisher")
    dev = generate_keypair(d / "keys", kind="device", name="dev1")
    out = {"pub": pub.public_path, "key": dev.private_path, "dicom": next(synthetic_dir.rglob("*.dcm"))}
    for name, art in (("ort", tiny_artifact), ("ov", ov)):
        out[name] = seal(art, d / f"{name}.edgemed", publisher_key=pub.private_path,
                         options=SealOptions(family=f"tiny-{name}", release=1),
                         recipients=[Recipient.load(dev.public_path)], archive=True)
    return out


def _verify(py: Path, b: dict[str, Path], name: str, tmp: Path) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([str(py), "-m", "edgemed_runtime", "verify", str(b[name]), "--trust",
                        str(b["pub"]), "--device-key", str(b["key"]), "--state-dir",
                        str(tmp / name), "--json"], capture_output=True, text=True, cwd="/",
                       timeout=300)
    return r.returncode, json.loads(r.stdout)


@pytest.mark.slow  # pip installs the runtime (and the openvino extra) from the package index
def test_runtime_only_venv_runs_what_it_can_and_names_the_missing_extra(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    manifest = json.loads(subprocess.run(["tar", "-xOf", str(bundles["ov"]), "bundle.json"],
                                         capture_output=True, check=True).stdout)
    assert manifest["requires"]["extras"] == ["openvino"]
    base = device_python(requirements_for("onnxruntime"))  # the env the release uses
    has = subprocess.run([str(base), "-c", "import importlib.util as u; print([m for m in "
                          "('torch', 'onnx', 'nncf', 'openvino', 'edgemed') if u.find_spec(m)])"],
                         capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert has == "[]"
    code, rep = _verify(base, bundles, "ort", tmp_path)
    assert code == 0 and rep["smoke_finite"], rep
    code, rep = _verify(base, bundles, "ov", tmp_path)
    assert code == 2 and rep["error"]["code"] == "missing-extra", rep
    assert rep["error"]["fix"] == "pip install 'edgemed-runtime[openvino]'"
    assert "openvino not installed" in rep["error"]["found"]
    with_ov = device_python(DeviceRequirements.from_dict(manifest["requires"]))
    code, rep = _verify(with_ov, bundles, "ov", tmp_path)
    assert code == 0 and rep["smoke_finite"] and rep["backend"] == "openvino", rep


@pytest.mark.slow  # the device environment comes from pip (cached after the first run)
def test_release_device_check_runs_in_the_device_environment(tmp_path: Path, synthetic_dir: Path,
                                                             trained_tiny: Any) -> None:
    from edgemed.release import release

    from .conftest import write_project

    r = release(write_project(tmp_path / "p", synthetic_dir, trained_tiny,
                              device_check="isolated"))
    t = r.targets[0]
    assert r.ok, t.error
    assert t.device_install == "pip install edgemed-runtime"
    assert t.device_check["ok"] and t.device_check["leaked_modules"] == []
    assert t.device_check["environment"] == "a venv with only: pip install edgemed-runtime"
