"""Fixtures for bundle tests: a tiny ONNX artifact, keys, and sealed bundles (fixed seeds)."""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from edgemed.bundle import KeyPair, Recipient, SealOptions, generate_keypair, seal
from edgemed.bundle.signing import sign_files
from edgemed_runtime import Artifact, IOSpec, PreprocessSpec
from edgemed_runtime.bundle import read_bundle
from edgemed_runtime.bundle.keys import load_private_key

CREATED = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
EXPIRES = datetime(2027, 1, 1, tzinfo=timezone.utc)


def make_artifact(path: Path, *, seed: int = 0, hidden: int = 64, metrics: dict | None = None,
                  provenance: tuple = ()) -> Artifact:
    """A tiny ONNX classifier (1x1x8x8 -> 2 logits) saved as an artifact directory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((64, hidden)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 2)).astype(np.float32), "W2")
    g = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("MatMul", ["f", "W1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(m, path / "model.onnx")
    art = Artifact(
        path=path, format="onnx", model_file="model.onnx",
        io=IOSpec(input_shape=(1, 1, 8, 8), labels=("a", "b")), preprocess=PreprocessSpec(size=(8, 8)),
        metrics=metrics if metrics is not None else {"gate": {"auc": 0.91, "passed": True}},
        target={"name": "cpu-x86", "hash": "0" * 64},
        provenance=provenance or (
            {"pass": "source", "sha256": "1" * 64, "model": "tiny"},
            {"pass": "calibration_set", "count": 16, "seed": 0, "sha256": "2" * 64},
            {"pass": "quantize_ort", "config": {"method": "minmax", "per_channel": True},
             "tools": {"onnxruntime": "1.x"}, "seconds": 0.1},
        ),
    )
    art.save()
    return art


@dataclass(frozen=True)
class Keys:
    publisher: KeyPair
    other_publisher: KeyPair
    device: KeyPair
    device2: KeyPair


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    return Keys(
        publisher=generate_keypair(d, kind="publisher", name="publisher"),
        other_publisher=generate_keypair(d, kind="publisher", name="attacker"),
        device=generate_keypair(d, kind="device", name="dev1"),
        device2=generate_keypair(d, kind="device", name="dev2"),
    )


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return make_artifact(tmp_path_factory.mktemp("art") / "model")


SealFn = Callable[..., Path]


@pytest.fixture(scope="session")
def make_bundle(keys: Keys, artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> SealFn:
    """``make_bundle(out, release=1, **SealOptions fields, recipients=..., archive=...)``."""
    def _make(out: Path, release: int = 1, *, recipients: Any = None, art: Artifact | None = None,
              created: datetime = CREATED, **opts: Any) -> Path:
        opts.setdefault("expires", EXPIRES)
        recips = recipients if recipients is not None else [Recipient.load(keys.device.public_path)]
        return seal(art or artifact, out, publisher_key=keys.publisher.private_path,
                    options=SealOptions(family="tiny", release=release, **opts),
                    recipients=recips, created=created)
    return _make


@pytest.fixture(scope="session")
def pristine(make_bundle: SealFn, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Read-only bundles: release 1 and 2 (dirs), release 2 archive, release 2 with 3+ chunks,
    release 2 with split weights (dir and archive)."""
    d = tmp_path_factory.mktemp("pristine")
    return {
        "r1": make_bundle(d / "r1", 1),
        "r2": make_bundle(d / "r2", 2),
        "r2a": make_bundle(d / "r2.edgemed", 2),
        "r2c": make_bundle(d / "r2c", 2, chunk_size=4096),
        "r2s": make_bundle(d / "r2s", 2, split_weights=True),
        "r2sa": make_bundle(d / "r2s.edgemed", 2, split_weights=True),
    }


def copy_bundle(src: Path, dst: Path) -> Path:
    """A writable copy of a bundle dir or archive."""
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def resign(bundle: Path, private_key_path: Path) -> None:
    """Re-sign a bundle directory's current files (simulates the publisher signing whatever is
    there, to test the layers under the signature)."""
    files = read_bundle(bundle).files
    sig = sign_files(dict(files), load_private_key(private_key_path), bundle.name)
    (bundle / "model.sig").write_bytes(sig)


def open_args(keys: Keys, state: Path, **kw: Any) -> dict[str, Any]:
    return {"trust": keys.publisher.public_path, "device_key": keys.device.private_path,
            "state_dir": state, "now": NOW, **kw}


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"



Members = list[tuple[tarfile.TarInfo, bytes]]


def rewrite_archive(archive: Path, edit: Callable[[Members], None],
                    fmt: int = tarfile.GNU_FORMAT) -> None:
    """Read a bundle archive's members (info, data), let ``edit`` change the list in place, and
    write the archive back in tar format ``fmt``."""
    with tarfile.open(archive, "r:") as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else b"") for m in tf]  # type: ignore[union-attr]
    edit(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    archive.write_bytes(buf.getvalue())
