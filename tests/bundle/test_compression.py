"""Payload compression before encryption (docs/bundle-format.md, "Compression"): ``auto``
compresses sparse / weight-shared models and leaves dense ones stored as is; the device
inflates with a hard cap at the signed ``uncompressed_length`` and refuses every other size,
truncated streams, trailing bytes and decompression bombs with specific codes."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgemed_runtime as rt
from edgemed.bundle import SealOptions
from edgemed_runtime import Artifact, IOSpec, PreprocessSpec
from edgemed_runtime.bundle import FORMAT_VERSION, verify_bundle
from edgemed_runtime.bundle.compress import decompress_payload
from edgemed_runtime.bundle.crypto import encrypt_stream, unwrap_data_key
from edgemed_runtime.bundle.format import PayloadEntry, canonical_json
from edgemed_runtime.bundle.keys import load_private_key
from edgemed_runtime.errors import BundleError, IntegrityError, InvalidInputError

from .conftest import NOW, Keys, copy_bundle, open_args, resign

X = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
SHAPES = [(64, 2048), (2048, 512), (512, 2)]  # ~1.2 MB of int8 weights: split weights by default


def _kmeans_1d(v: np.ndarray, k: int, iters: int = 8) -> np.ndarray:
    c = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        idx = np.abs(v[:, None] - c[None, :]).argmin(1)
        c = np.array([v[idx == j].mean() if np.any(idx == j) else c[j] for j in range(k)])
    return c[np.abs(v[:, None] - c[None, :]).argmin(1)]


def make_qdq_artifact(path: Path, *, sparse: bool, seed: int = 0) -> Artifact:
    """An INT8 QDQ MLP (DequantizeLinear(int8 W) -> MatMul, per-tensor symmetric scales).
    ``sparse``: the same float weights pruned to 50% by magnitude and k-means clustered to 16
    shared values per tensor before quantization (what prune_unstructured + cluster_weights +
    quantize_onnxruntime produce)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], [helper.make_node("Flatten", ["input"], ["r0"])]
    for i, shape in enumerate(SHAPES):
        w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if sparse:
            flat = w.ravel()
            keep = np.abs(flat) >= np.median(np.abs(flat))
            flat = np.where(keep, flat, 0.0)
            flat[keep] = _kmeans_1d(flat[keep], 16)
            w = flat.reshape(shape).astype(np.float32)
        scale = np.float32(np.abs(w).max() / 127)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(q, f"W{i}_q"),
                  numpy_helper.from_array(np.array(scale, np.float32), f"W{i}_s"),
                  numpy_helper.from_array(np.array(0, np.int8), f"W{i}_z")]
        out = "logits" if i == len(SHAPES) - 1 else f"m{i}"
        nodes += [helper.make_node("DequantizeLinear", [f"W{i}_q", f"W{i}_s", f"W{i}_z"], [f"W{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"W{i}"], [out])]
        if i < len(SHAPES) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{i + 1}"]))
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(m, path / "model.onnx")
    art = Artifact(path=path, format="onnx-qdq", model_file="model.onnx",
                   io=IOSpec(input_shape=(1, 1, 8, 8), labels=("a", "b")),
                   preprocess=PreprocessSpec(size=(8, 8)), target={"name": "cpu-x86", "hash": "0" * 64})
    art.save()
    return art


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    d = tmp_path_factory.mktemp("qdq")
    return {"dense": make_qdq_artifact(d / "dense", sparse=False),
            "sparse": make_qdq_artifact(d / "sparse", sparse=True)}


@pytest.fixture(scope="module")
def sealed(make_bundle: Any, arts: dict[str, Artifact],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Read-only bundles (release 2): dense/sparse with auto, sparse with none, and the tiny
    fixture model with zlib forced (dir and archive)."""
    d = tmp_path_factory.mktemp("sealed-compression")
    return {
        "dense": make_bundle(d / "dense", 2, art=arts["dense"]),
        "sparse": make_bundle(d / "sparse", 2, art=arts["sparse"]),
        "sparse-a": make_bundle(d / "sparse.edgemed", 2, art=arts["sparse"]),
        "sparse-none": make_bundle(d / "sparse-none", 2, art=arts["sparse"], compression="none"),
        "tiny-zlib": make_bundle(d / "tiny-zlib", 2, compression="zlib"),
        "tiny-zlib-chunks": make_bundle(d / "tiny-zlib-c", 2, compression="zlib", chunk_size=4096,
                                        split_weights=False),
    }


def _payloads(b: Path) -> list[dict[str, Any]]:
    return json.loads((b / "bundle.json").read_bytes())["payloads"]


def _payload_bytes(b: Path) -> int:
    return sum(f.stat().st_size for f in (b / "payload").iterdir())


def _reference(art: Artifact) -> np.ndarray:
    with rt.open(art) as s:
        return s.run({"input": X})["logits"]


# -- sealing and opening -------------------------------------------------------------------------
def test_sparse_auto_is_compressed_smaller_and_identical(sealed: dict[str, Path], arts: dict[str, Artifact],
                                                        keys: Keys, tmp_path: Path) -> None:
    ps = {p["role"]: p for p in _payloads(sealed["sparse"])}
    assert set(ps) == {"model", "weights"}  # still split: onnxruntime gets the tensors in place
    w = ps["weights"]
    assert w["compression"] == "zlib" and w["uncompressed_length"] > 1 << 20
    assert w["plaintext_length"] <= 0.8 * w["uncompressed_length"]
    assert (sealed["sparse"] / w["path"]).stat().st_size == w["ciphertext_length"]
    assert _payload_bytes(sealed["sparse"]) < 0.8 * _payload_bytes(sealed["sparse-none"])
    ref = _reference(arts["sparse"])
    for form in ("sparse", "sparse-a", "sparse-none"):
        with rt.open(sealed[form], **open_args(keys, tmp_path / form)) as s:
            np.testing.assert_array_equal(s.run({"input": X})["logits"], ref)
    assert all(p["compression"] == "none" and "uncompressed_length" not in p
               for p in _payloads(sealed["sparse-none"]))
    info = rt.bundle.inspect_bundle(sealed["sparse"])
    assert info["size_bytes"] == sum(p.get("uncompressed_length", p["plaintext_length"])
                                     for p in ps.values())


def test_dense_auto_is_stored_uncompressed(sealed: dict[str, Path], arts: dict[str, Artifact],
                                           keys: Keys, tmp_path: Path) -> None:
    ps = {p["role"]: p for p in _payloads(sealed["dense"])}
    # the weights stay stored as is (zero-copy load); the small graph is decided on its own
    assert ps["weights"]["compression"] == "none" and "uncompressed_length" not in ps["weights"]
    assert ps["model"]["plaintext_length"] < 4096
    with rt.open(sealed["dense"], **open_args(keys, tmp_path / "s")) as s:
        np.testing.assert_array_equal(s.run({"input": X})["logits"], _reference(arts["dense"]))


@pytest.mark.parametrize("form", ["tiny-zlib", "tiny-zlib-chunks"])
def test_forced_zlib_round_trip(form: str, sealed: dict[str, Path], artifact: Any, keys: Keys,
                                tmp_path: Path) -> None:
    p, = _payloads(sealed[form])
    assert p["compression"] == "zlib" and p["plaintext_length"] != p["uncompressed_length"]
    with rt.open(sealed[form], **open_args(keys, tmp_path / "s")) as s:
        np.testing.assert_array_equal(s.run({"input": X})["logits"], _reference(artifact))


def test_sparse_clustered_payload_ratio(sealed: dict[str, Path]) -> None:
    """Issue bar: unstructured 50% + clustering -> bundle payload <= 0.6x the dense INT8 one."""
    dense, sparse = _payload_bytes(sealed["dense"]), _payload_bytes(sealed["sparse"])
    ratio = sparse / dense
    print(f"\npayload bytes: dense INT8 {dense}, 50% sparse + 16 clusters {sparse}, "
          f"ratio {ratio:.3f} (bar <= 0.6)")
    assert ratio <= 0.6


def test_seal_option_and_format_version(artifact: Any) -> None:
    assert FORMAT_VERSION == 1  # additive, optional fields: no version bump
    with pytest.raises(InvalidInputError) as ei:
        SealOptions(family="tiny", release=1, compression="zstd")
    assert ei.value.code == "bad-compression"


def test_compressed_entry_layout_is_pinned() -> None:
    e = PayloadEntry(path="payload/m.enc", name="m", role="model", plaintext_length=10,
                     chunk_size=4096, compression="zlib", uncompressed_length=100)
    assert e.to_dict() == {"path": "payload/m.enc", "name": "m", "role": "model",
                           "plaintext_length": 10, "chunk_size": 4096, "ciphertext_length": 26,
                           "compression": "zlib", "uncompressed_length": 100}
    assert e.size == 100
    with pytest.raises(IntegrityError):
        PayloadEntry(path="payload/m.enc", name="m", role="model", plaintext_length=10,
                     chunk_size=4096, compression="zlib")


# -- device-side refusal (the publisher's key signs whatever is there: tests the layer under it) --
def _data_key(b: Path, keys: Keys) -> tuple[bytes, bytes]:
    man = json.loads((b / "bundle.json").read_bytes())
    bid = bytes.fromhex(man["bundle_id"])
    fp = keys.device.fingerprint
    w = json.loads((b / f"keys/{fp}.json").read_bytes())
    return unwrap_data_key(w["scheme"], w["wrapped"], load_private_key(keys.device.private_path),
                           bid, fp), bid


def restore(b: Path, keys: Keys, stored: bytes | None = None, **fields: Any) -> None:
    """Replace the bundle's (single) payload entry fields and, if given, re-encrypt ``stored`` as
    its stored bytes; then re-sign."""
    man = json.loads((b / "bundle.json").read_bytes())
    p = man["payloads"][0]
    for k, v in fields.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    if stored is not None:
        dk, bid = _data_key(b, keys)
        p["plaintext_length"] = len(stored)
        e = PayloadEntry(path=p["path"], name=p["name"], role=p["role"],
                         plaintext_length=len(stored), chunk_size=p["chunk_size"],
                         compression=p.get("compression", "none"),
                         uncompressed_length=p.get("uncompressed_length"))
        p["ciphertext_length"] = e.ciphertext_length
        (b / p["path"]).write_bytes(encrypt_stream(dk, bid, e, man["release"], stored))
    (b / "bundle.json").write_bytes(canonical_json(man))
    resign(b, keys.publisher.private_path)


def _model_bytes(artifact: Any) -> bytes:
    return (Path(artifact.path) / artifact.model_file).read_bytes()


def _z(plain: bytes) -> bytes:
    return zlib.compress(plain, 9)


# (name, mutate(bundle, keys, model bytes), exception, code), each on a copy of ``tiny-zlib``
CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("declared-size-plus-one", lambda b, k, m: restore(b, k, uncompressed_length=len(m) + 1),
     IntegrityError, "decompressed-length"),
    ("declared-size-minus-one", lambda b, k, m: restore(b, k, uncompressed_length=len(m) - 1),
     IntegrityError, "decompressed-length"),
    ("declared-size-zero", lambda b, k, m: restore(b, k, uncompressed_length=0),
     IntegrityError, "decompressed-length"),
    ("truncated-stream", lambda b, k, m: restore(b, k, _z(m)[: len(_z(m)) // 2]),
     IntegrityError, "decompress-failed"),
    ("stream-without-checksum", lambda b, k, m: restore(b, k, _z(m)[:-4]),
     IntegrityError, "decompress-failed"),
    ("bad-checksum", lambda b, k, m: restore(b, k, _z(m)[:-1] + bytes([_z(m)[-1] ^ 1])),
     IntegrityError, "decompress-failed"),
    ("trailing-bytes", lambda b, k, m: restore(b, k, _z(m) + b"\x00edgemed"),
     IntegrityError, "decompress-failed"),
    ("two-streams", lambda b, k, m: restore(b, k, _z(m) + _z(m)),
     IntegrityError, "decompress-failed"),
    ("not-zlib", lambda b, k, m: restore(b, k, m), IntegrityError, "decompress-failed"),
    ("empty-stream", lambda b, k, m: restore(b, k, b""), IntegrityError, "decompress-failed"),
    ("bomb", lambda b, k, m: restore(b, k, _z(b"\0" * (64 << 20))),
     IntegrityError, "decompressed-length"),
    ("unknown-codec", lambda b, k, m: restore(b, k, compression="zstd"),
     BundleError, "unsupported-compression"),
    ("zlib-without-length", lambda b, k, m: restore(b, k, uncompressed_length=None),
     IntegrityError, "manifest-invalid"),
    ("none-with-length", lambda b, k, m: restore(b, k, compression="none"),
     IntegrityError, "manifest-invalid"),
    ("length-huge", lambda b, k, m: restore(b, k, uncompressed_length=1 << 40),
     IntegrityError, "manifest-invalid"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_tampered_compression_refused(case: tuple, sealed: dict[str, Path], artifact: Any,
                                      keys: Keys, tmp_path: Path) -> None:
    _, mutate, exc, code = case
    b = copy_bundle(sealed["tiny-zlib"], tmp_path / "b")
    mutate(b, keys, _model_bytes(artifact))
    state = tmp_path / "state"
    with pytest.raises(exc) as ei:
        rt.open(b, **open_args(keys, state))
    assert ei.value.code == code, str(ei.value)
    assert ei.value.message and "Traceback" not in str(ei.value)
    assert not (state / "rollback" / "tiny.json").exists()  # nothing recorded


def test_old_bundle_without_codec_field_opens(pristine: dict[str, Path], artifact: Any, keys: Keys,
                                              tmp_path: Path) -> None:
    """A bundle sealed before compression existed has no ``compression`` key."""
    b = copy_bundle(pristine["r2"], tmp_path / "old")
    restore(b, keys, compression=None)
    assert "compression" not in _payloads(b)[0]
    vb = verify_bundle(b, trust=keys.publisher.public_path, now=NOW)
    assert vb.manifest.payloads[0].compression == "none"
    with rt.open(b, **open_args(keys, tmp_path / "s")) as s:
        np.testing.assert_array_equal(s.run({"input": X})["logits"], _reference(artifact))


def test_bomb_never_allocates_past_the_declared_size() -> None:
    """A stream declared as 1 MiB that inflates to 256 MiB: refused after at most one byte too
    many; peak Python allocation stays near the declared size (tracemalloc sees numpy too)."""
    bomb = zlib.compress(b"\0" * (256 << 20), 9)
    e = PayloadEntry(path="payload/m.enc", name="m", role="model", plaintext_length=len(bomb),
                     chunk_size=1 << 20, compression="zlib", uncompressed_length=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError) as ei:
            decompress_payload(e, bytearray(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ei.value.code == "decompressed-length"
    assert peak < 4 << 20, peak
    # and the exact size passes
    ok = zlib.compress(b"\x07" * 5000, 9)
    e2 = PayloadEntry(path="payload/m.enc", name="m", role="model", plaintext_length=len(ok),
                      chunk_size=4096, compression="zlib", uncompressed_length=5000)
    assert bytes(decompress_payload(e2, bytearray(ok))) == b"\x07" * 5000
