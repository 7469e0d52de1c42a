"""Interop with the reference OpenSSF Model Signing CLI (model-signing, a test dependency):
our bundles verify with ``model_signing verify key``, keys/ added after signing included, and
a signature written by ``model_signing sign key`` verifies with the device runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgemed_runtime as rt
from edgemed.bundle import Recipient, add_device
from edgemed_runtime.bundle import verify_bundle

from .conftest import NOW, Keys, copy_bundle, open_args

pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "model_signing"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "model_signing"]


def _verify(bundle: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), "verify", "key", str(bundle), "--signature", str(bundle / "model.sig"),
         "--public_key", str(pub)], capture_output=True, text=True, timeout=120)


def test_reference_cli_verifies_bundle_with_devices_added_after_signing(
        keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "bundle")
    add_device(b, Recipient.load(keys.device2.public_path), unwrap_key=keys.device.private_path,
               trust=keys.publisher.public_path)
    assert len(list((b / "keys").iterdir())) == 2
    out = _verify(b, keys.publisher.public_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verification succeeded" in out.stdout


@pytest.mark.parametrize("victim", ["bundle.json", "payload/model.onnx.enc"])
def test_reference_cli_rejects_tampering(victim: str, keys: Keys, pristine: dict[str, Path],
                                         tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "bundle")
    data = bytearray((b / victim).read_bytes())
    data[len(data) // 2] ^= 1
    (b / victim).write_bytes(bytes(data))
    out = _verify(b, keys.publisher.public_path)
    assert out.returncode != 0


def test_reference_cli_rejects_other_publisher(keys: Keys, pristine: dict[str, Path]) -> None:
    assert _verify(pristine["r2"], keys.other_publisher.public_path).returncode != 0


def test_runtime_accepts_signature_from_reference_signer(keys: Keys, pristine: dict[str, Path],
                                                         tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "bundle")
    ours = (b / "model.sig").read_bytes()
    (b / "model.sig").unlink()
    out = subprocess.run(
        [*_cli(), "sign", "key", str(b), "--signature", str(b / "model.sig"),
         "--private_key", str(keys.publisher.private_path), "--ignore-paths", str(b / "keys")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (b / "model.sig").read_bytes() != ours
    vb = verify_bundle(b, trust=keys.publisher.public_path, now=NOW)
    assert vb.manifest.release == 2
    with rt.open(b, **open_args(keys, tmp_path / "state")) as s:
        assert s.info["release"] == 2


def test_archive_unpacked_verifies_with_reference_cli(keys: Keys, pristine: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The .edgemed archive holds the same files: unpacked, the reference CLI verifies them."""
    import tarfile

    d = tmp_path / "unpacked"
    with tarfile.open(pristine["r2a"], "r:") as tf:
        tf.extractall(d, filter="data")
    out = _verify(d, keys.publisher.public_path)
    assert out.returncode == 0, out.stdout + out.stderr
    shutil.rmtree(d)
