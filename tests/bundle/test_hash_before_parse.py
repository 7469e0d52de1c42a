"""Hash before parse (docs/bundle-format.md, "Loading" step 2).

Every device of a bundle shares its data key, so whoever extracts one device key can decrypt a
payload, change it and re-encrypt it under the same key: AES-GCM then passes on every device and
only the publisher-signed SHA-256 refuses it. These tests do exactly that (the crypto module
stands in for the attacker) and check that the bundle is refused with ``hash-mismatch`` before
any parser sees the modified bytes: no onnxruntime session, no OpenVINO read, no weights-index
parse, no inflate. The spies count calls and still call through (the real backends run).

Also here: split weights open through the onnxruntime backend itself, with the same session and
provider options an unsealed artifact gets.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import pytest

import edgemed_runtime as rt
from edgemed_runtime.bundle import pack_archive, read_bundle
from edgemed_runtime.bundle.crypto import decrypt_stream, encrypt_stream, unwrap_data_key
from edgemed_runtime.bundle.format import BundleManifest, parse_manifest
from edgemed_runtime.bundle.keys import load_private_key
from edgemed_runtime.errors import IntegrityError

from .conftest import Keys, copy_bundle, open_args

X = np.zeros((1, 1, 8, 8), np.float32)


# -- the attacker's tools (also used by test_manifest_fuzz.py) --------------------------------
def data_key(bundle: Path, keys: Keys) -> tuple[bytes, BundleManifest]:
    """The bundle's data key, unwrapped with our device key, and its parsed manifest."""
    files = read_bundle(bundle)
    m = parse_manifest(files.files["bundle.json"])
    w = json.loads(files.keys[f"keys/{keys.device.fingerprint}.json"])
    dk = unwrap_data_key(w["scheme"], w["wrapped"], load_private_key(keys.device.private_path),
                         m.bundle_id_bytes, keys.device.fingerprint)
    return dk, m


def reencrypt(bundle: Path, keys: Keys, name: str, mutate: Callable[[bytearray], None]) -> None:
    """Decrypt payload ``name`` of a bundle directory, ``mutate`` its stored bytes in place
    (same length), and encrypt it again under the same data key (no re-signing)."""
    dk, m = data_key(bundle, keys)
    p = next(p for p in m.payloads if p.name == name)
    path = bundle / p.path
    plain = bytearray(decrypt_stream(dk, m.bundle_id_bytes, p, m.release, path.read_bytes()))
    before = bytes(plain)
    mutate(plain)
    assert len(plain) == p.plaintext_length and bytes(plain) != before
    path.write_bytes(encrypt_stream(dk, m.bundle_id_bytes, p, m.release, bytes(plain)))


def flip_middle(buf: bytearray) -> None:
    buf[len(buf) // 2] ^= 0x40


class Spy:
    """Counts calls of ``owner.attr`` and calls through to the original."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, attr: str) -> None:
        self.calls = 0
        original = getattr(owner, attr)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, attr, spy)


# -- hash before parse --------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["dir", "archive"])
def test_reencrypted_model_is_refused_before_onnxruntime_parses_it(
        form: str, keys: Keys, pristine: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = copy_bundle(pristine["r2"], tmp_path / "b")
    reencrypt(b, keys, "model.onnx", flip_middle)
    if form == "archive":
        a = tmp_path / "b.edgemed"
        a.write_bytes(pack_archive(read_bundle(b).all_files()))
        b = a
    sessions = Spy(monkeypatch, ort.InferenceSession, "__init__")
    with pytest.raises(IntegrityError) as ei:
        rt.open(b, **open_args(keys, tmp_path / "state"))
    assert ei.value.code == "hash-mismatch", str(ei.value)
    assert sessions.calls == 0, "onnxruntime parsed bytes whose signed digest does not match"
    # the spy calls through: an untouched bundle still opens under it
    with rt.open(pristine["r2"], **open_args(keys, tmp_path / "state")) as s:
        assert s.run({"input": X})["logits"].shape == (1, 2)
    assert sessions.calls == 1


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.weights"])
def test_reencrypted_split_weights_are_refused_before_any_parser(
        name: str, keys: Keys, pristine: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed_runtime.bundle import weights

    b = copy_bundle(pristine["r2s"], tmp_path / "b")
    # the weights payload: modify its JSON index (a parser input of its own)
    mutate = flip_middle if name == "model.onnx" else (lambda buf: buf.__setitem__(20, buf[20] ^ 1))
    reencrypt(b, keys, name, mutate)
    sessions = Spy(monkeypatch, ort.InferenceSession, "__init__")
    index = Spy(monkeypatch, weights, "unpack_weights")
    with pytest.raises(IntegrityError) as ei:
        rt.open(b, **open_args(keys, tmp_path / "state"))
    assert ei.value.code == "hash-mismatch", str(ei.value)
    assert (sessions.calls, index.calls) == (0, 0)


def test_reencrypted_compressed_payload_is_refused_before_inflating(
        keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = make_bundle(tmp_path / "b", 2, compression="zlib")
    reencrypt(b, keys, "model.onnx", flip_middle)
    inflate = Spy(monkeypatch, zlib, "decompressobj")
    sessions = Spy(monkeypatch, ort.InferenceSession, "__init__")
    with pytest.raises(IntegrityError) as ei:
        rt.open(b, **open_args(keys, tmp_path / "state"))
    assert ei.value.code == "hash-mismatch", str(ei.value)
    assert (inflate.calls, sessions.calls) == (0, 0)


def test_reencrypted_model_is_refused_before_openvino_reads_it(
        keys: Keys, pristine: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from edgemed_runtime.backends import openvino as ov_backend

    b = copy_bundle(pristine["r2"], tmp_path / "b")
    reencrypt(b, keys, "model.onnx", flip_middle)
    reads = Spy(monkeypatch, ov_backend, "read_model")
    with pytest.raises(IntegrityError) as ei:
        rt.open(b, backend="openvino", **open_args(keys, tmp_path / "state"))
    assert ei.value.code == "hash-mismatch", str(ei.value)
    assert reads.calls == 0
    with rt.open(pristine["r2"], backend="openvino", **open_args(keys, tmp_path / "state")) as s:
        assert s.run({"input": X})["logits"].shape == (1, 2)
    assert reads.calls == 1


def test_decrypt_payloads_checks_digests_before_inflating(
        keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed_runtime.bundle import decrypt_payloads, verify_bundle

    from .conftest import NOW

    b = make_bundle(tmp_path / "b", 2, compression="zlib")
    reencrypt(b, keys, "model.onnx", flip_middle)
    vb = verify_bundle(b, trust=keys.publisher.public_path, now=NOW, defer_payload_hashes=True)
    inflate = Spy(monkeypatch, zlib, "decompressobj")
    with pytest.raises(IntegrityError) as ei:
        decrypt_payloads(vb, keys.device.private_path)
    assert ei.value.code == "hash-mismatch" and inflate.calls == 0


# -- split weights open through the backend ------------------------------------------------------
class SessionArgs:
    """Records the providers, provider options and intra-op threads of every onnxruntime
    session created (and creates it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[Any, Any, int]] = []
        original = ort.InferenceSession.__init__

        def spy(sess: Any, model: Any, sess_options: Any = None, providers: Any = None,
                provider_options: Any = None, **kw: Any) -> None:
            self.seen.append((providers, provider_options,
                              sess_options.intra_op_num_threads if sess_options else None))
            original(sess, model, sess_options=sess_options, providers=providers,
                     provider_options=provider_options, **kw)

        monkeypatch.setattr(ort.InferenceSession, "__init__", spy)


@pytest.mark.parametrize("opts", [{"providers": ["cuda", "cpu"], "device": 0, "precision": "fp16"},
                                  {"providers": ["xnnpack", "cpu"], "threads": 2}],
                         ids=["gpu-cuda", "xnnpack"])
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_split_weights_get_the_session_options_of_the_unsealed_artifact(
        opts: dict[str, Any], keys: Keys, make_bundle: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A gpu-cuda / XNNPACK profile: the split-weights bundle must open with the provider
    options (CUDA ``device_id``) and thread rule (XNNPACK: ORT's own pool at 1) that the same
    artifact gets unsealed. This onnxruntime has neither EP, so the test makes it claim both;
    onnxruntime then falls back to the CPU EP with a warning."""
    from .conftest import make_artifact

    art = make_artifact(tmp_path / "art").evolve(backend_options=opts)
    art.save()
    b = make_bundle(tmp_path / "b", 2, art=art, split_weights=True)
    available = [*ort.get_available_providers(), "CUDAExecutionProvider", "XnnpackExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    args = SessionArgs(monkeypatch)
    with rt.open(art) as s:
        ref = s.run({"input": X})["logits"]
    with rt.open(b, **open_args(keys, tmp_path / "state")) as s:
        out = s.run({"input": X})["logits"]
    np.testing.assert_array_equal(out, ref)
    unsealed, sealed = args.seen
    assert sealed == unsealed, (sealed, unsealed)
    providers, provider_options, _ = sealed
    assert provider_options is not None and len(provider_options) == len(providers)
    if "cuda" in opts["providers"]:
        assert provider_options[0]["device_id"] == "0"
    else:
        assert sealed[2] == 1 and provider_options[0] == {"intra_op_num_threads": "2"}


def test_split_weights_session_wipes_its_buffers_and_keeps_backend_details(
        keys: Keys, pristine: dict[str, Path], tmp_path: Path) -> None:
    s = rt.open(pristine["r2s"], **open_args(keys, tmp_path / "state"))
    bs = s._bs
    assert bs.details.get("providers") == ["CPUExecutionProvider"]
    buffers = list(bs._buffers)
    assert any(np.frombuffer(b, np.uint8).any() for b in buffers)
    s.close()
    assert all(not np.frombuffer(b, np.uint8).any() for b in buffers)
