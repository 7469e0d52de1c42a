"""Sealing and opening: dir and archive forms, every wrap scheme, add-device, inspect,
install, rollback state, and that no plaintext model bytes ever reach the disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import edgemed_runtime as rt
from edgemed.bundle import Recipient, add_device, generate_keypair, inspect_bundle
from edgemed_runtime.bundle import (
    RollbackState,
    install_bundle,
    installed_path,
    open_installed,
    read_bundle,
    verify_bundle,
)

from .conftest import NOW, Keys, copy_bundle, open_args

X = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)


def _reference(artifact: Any) -> np.ndarray:
    with rt.open(artifact) as s:
        return s.run({"input": X})["logits"]


@pytest.mark.parametrize("form", ["r2", "r2a", "r2c", "r2s", "r2sa"])
def test_open_matches_plain_artifact(form: str, keys: Keys, pristine: dict[str, Path],
                                     artifact: Any, state_dir: Path) -> None:
    with rt.open(pristine[form], **open_args(keys, state_dir)) as s:
        out = s.run({"input": X})["logits"]
        assert s.info["release"] == 2 and s.info["family"] == "tiny"
        assert s.labels == ("a", "b")
        assert s.preprocess.size == (8, 8)
    np.testing.assert_array_equal(out, _reference(artifact))
    rec = RollbackState(state_dir).get("tiny")
    assert rec is not None and rec.release == 2


@pytest.mark.parametrize("scheme", ["x25519", "p256", "rsa"])
def test_every_wrap_scheme_and_add_device(scheme: str, keys: Keys, pristine: dict[str, Path],
                                          tmp_path: Path, artifact: Any) -> None:
    dev = generate_keypair(tmp_path, kind="device", name=f"d-{scheme}", scheme=scheme)
    for src in ("r2", "r2a"):
        b = copy_bundle(pristine[src], tmp_path / f"b-{src}{'.edgemed' if src == 'r2a' else ''}")
        before = {p: v for p, v in read_bundle(b).all_files().items() if not p.startswith("keys/")}
        rel = add_device(b, Recipient.load(f"ward-7={dev.public_path}"),
                         unwrap_key=keys.device.private_path, trust=keys.publisher.public_path)
        after = read_bundle(b).all_files()
        # add-device touches nothing but keys/: no re-encryption, no re-signing
        assert {p: v for p, v in after.items() if not p.startswith("keys/")} == before
        assert rel == f"keys/{dev.fingerprint}.json"
        assert json.loads(after[rel])["device_id"] == "ward-7"
        with rt.open(b, **open_args(keys, tmp_path / f"state-{src}", device_key=dev.private_path)) as s:
            np.testing.assert_array_equal(s.run({"input": X})["logits"], _reference(artifact))


def test_add_device_needs_a_wrapped_key(keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    with pytest.raises(rt.DeviceMismatchError) as ei:
        add_device(b, Recipient.load(keys.device2.public_path), unwrap_key=keys.device2.private_path,
                   trust=keys.publisher.public_path)
    assert ei.value.code == "no-device-key"


def test_inspect_without_decrypting(keys: Keys, pristine: dict[str, Path]) -> None:
    for form in ("r2", "r2a"):
        d = inspect_bundle(pristine[form])
        assert d["kind"] == "bundle" and d["verified"] is False
        assert d["family"] == "tiny" and d["release"] == 2 and d["format"] == "onnx"
        assert d["devices"][0]["device_id"] == "dev1"
        assert d["files"]["payload/model.onnx.enc"]["sha256_signed"]
        assert d["provenance"][0]["pass"] == "source"
        json.dumps(d)
        assert inspect_bundle(pristine[form], trust=keys.publisher.public_path)["verified"] is True


def test_archive_is_deterministic_and_equals_dir(pristine: dict[str, Path]) -> None:
    from edgemed_runtime.bundle import pack_archive

    files = read_bundle(pristine["r2a"]).all_files()
    assert pack_archive(files) == pristine["r2a"].read_bytes()
    assert set(read_bundle(pristine["r2"]).all_files()) == set(files)


def test_verify_bundle_without_device_key(keys: Keys, pristine: dict[str, Path]) -> None:
    vb = verify_bundle(pristine["r2"], trust=keys.publisher.public_path, now=NOW)
    assert vb.manifest.release == 2
    assert set(vb.statement.resources) == {"bundle.json", "payload/model.onnx.enc"}


def test_same_release_reopens_and_higher_release_advances(keys: Keys, pristine: dict[str, Path],
                                                          state_dir: Path) -> None:
    for form in ("r1", "r1", "r2", "r2"):
        rt.open(pristine[form], **open_args(keys, state_dir)).close()
    for form, code in (("r2a", "release-reused"), ("r1", "rollback")):
        with pytest.raises(rt.RollbackError) as ei:
            rt.open(pristine[form], **open_args(keys, state_dir))
        assert ei.value.code == code


def test_state_not_recorded_when_smoke_fails(keys: Keys, tmp_path: Path,
                                             make_bundle: Callable[..., Path]) -> None:
    from edgemed_runtime import Artifact, IOSpec

    # a valid model whose declared IO does not fit it: the smoke inference fails
    art_dir = tmp_path / "art"
    from .conftest import make_artifact

    a = make_artifact(art_dir)
    bad = a.evolve(io=IOSpec(input_shape=(1, 1, 4, 4), labels=("a", "b")))
    bad.save()
    b = make_bundle(tmp_path / "b", 5, art=Artifact.load(art_dir))
    with pytest.raises(rt.BundleError) as ei:
        rt.open(b, **open_args(keys, tmp_path / "state"))
    assert ei.value.code == "smoke-failed"
    assert RollbackState(tmp_path / "state").get("tiny") is None


def test_install_and_open_installed(keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    kw = {k: v for k, v in open_args(keys, state).items()}
    p1 = install_bundle(pristine["r1"], store, **kw)
    assert installed_path(store, "tiny") == p1
    p2 = install_bundle(pristine["r2"], store, **kw)
    with open_installed(store, "tiny", **kw) as s:
        assert s.info["release"] == 2
    assert p2.suffix == ".edgemed" and p1.exists()
    with pytest.raises(rt.RollbackError):
        install_bundle(pristine["r1"], store, **kw)
    assert installed_path(store, "tiny") == p2


def test_runtime_imports_without_sdk_dependencies(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'nncf', 'model_signing', 'edgemed'):\n"
        "    sys.modules[m] = None\n"
        "import edgemed_runtime, edgemed_runtime.bundle\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    light = subprocess.run([sys.executable, "-c", "import sys, edgemed_runtime; "
                            "print('cryptography' in sys.modules)"], capture_output=True, text=True,
                           timeout=60)
    assert light.stdout.strip() == "False"


def _scan(roots: list[Path], needles: list[bytes], since: float = 0.0) -> list[str]:
    hits = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                try:
                    st = p.lstat()
                    if p.is_symlink() or not p.is_file() or st.st_size > 64 << 20 \
                            or st.st_mtime < since:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                if any(nd in data for nd in needles):
                    hits.append(str(p))
    return hits


@pytest.mark.parametrize("split", [False, True], ids=["inline", "split-weights"])
def test_no_plaintext_model_on_disk_after_open_and_100_inferences(
        split: bool, keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    """Run in a child process with its own cwd, HOME and TMPDIR, then scan those folders (and the
    bundle, state and key folders) for any 64-byte window of the plaintext model."""
    from .conftest import make_artifact

    art = make_artifact(tmp_path / "src", seed=7, hidden=96)
    b = make_bundle(tmp_path / "bundle.edgemed", 3, art=art, split_weights=split)
    model = (tmp_path / "src" / "model.onnx").read_bytes()
    needles = [model[i:i + 64] for i in range(len(model) // 4, len(model) - 64, len(model) // 16)]
    (tmp_path / "src" / "model.onnx").unlink()
    run = tmp_path / "run"
    for d in ("cwd", "home", "tmp", "state"):
        (run / d).mkdir(parents=True)
    script = (
        "import numpy as np, edgemed_runtime as rt\n"
        f"s = rt.open({str(b)!r}, trust={str(keys.publisher.public_path)!r}, "
        f"device_key={str(keys.device.private_path)!r}, state_dir={str(run / 'state')!r})\n"
        "x = np.ones((1, 1, 8, 8), np.float32)\n"
        "for _ in range(100):\n"
        "    s.run({'input': x})\n"
        "s.close()\n"
    )
    t0 = time.time() - 1
    env = {**os.environ, "HOME": str(run / "home"), "TMPDIR": str(run / "tmp")}
    out = subprocess.run([sys.executable, "-c", script], cwd=run / "cwd", env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(needles) >= 10
    assert _scan([tmp_path], needles) == []
    # and nothing written anywhere under the system temp folder or HOME during the run
    roots = [Path(tempfile.gettempdir()), Path.home() / ".edgemed", Path.home() / ".cache"]
    assert _scan([r for r in roots if r.is_dir()], needles, since=t0) == []


def test_split_weights_layout_and_session_wipes_on_close(keys: Keys, pristine: dict[str, Path],
                                                        tmp_path: Path) -> None:
    from edgemed_runtime.bundle import verify_bundle

    vb = verify_bundle(pristine["r2s"], trust=keys.publisher.public_path, now=NOW)
    roles = {p.role: p for p in vb.manifest.payloads}
    assert set(roles) == {"model", "weights"} and roles["weights"].name == "model.onnx.weights"
    assert roles["model"].plaintext_length < 2048  # the graph alone
    s = rt.open(pristine["r2s"], **open_args(keys, tmp_path / "state"))
    bs = s._bs
    buffers = list(bs._buffers)
    assert any(np.frombuffer(b, np.uint8).any() for b in buffers)
    s.close()
    assert all(not np.frombuffer(b, np.uint8).any() for b in buffers)


def test_weights_payload_parser_refuses_bad_input() -> None:
    from edgemed_runtime.bundle.weights import pack_weights, unpack_weights

    data, _ = pack_weights([("w", np.arange(300, dtype=np.float32).reshape(3, 100))])
    (name, arr), = unpack_weights(bytearray(data))
    assert name == "w" and arr.shape == (3, 100) and arr[2, 99] == 299
    bad = [b"NOTMAGIC" + data[8:], data[:-20], data[:8] + b"\x00\x00\x00\x02" + data[12:],
           data.replace(b'"length":1200', b'"length":1204'),
           data.replace(b'"offset":0', b'"offset":8')]
    for d in bad:
        with pytest.raises(rt.IntegrityError) as ei:
            unpack_weights(bytearray(d))
        assert ei.value.code == "weights-invalid"
