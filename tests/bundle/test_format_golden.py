"""Golden tests pinning the serialised bundle format (docs/bundle-format.md): the stream
construction, key commitment, associated data, wrap info, OMS statement, archive form, the
bundle.json layout and the wrapped-key file. A change here is a format change: update the spec,
and bump FORMAT_VERSION unless it is additive and old bundles still open (payload
``compression`` / ``uncompressed_length``: absent = uncompressed; tests/bundle/test_compression.py)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgemed_runtime.bundle import FORMAT_VERSION, pack_archive, read_bundle
from edgemed_runtime.bundle.crypto import (
    decrypt_stream,
    encrypt_stream,
    key_commitment,
    stream_aad,
    wrap_info,
)
from edgemed_runtime.bundle.format import PayloadEntry, canonical_json
from edgemed_runtime.bundle.oms import build_statement

from .conftest import Keys

GOLDEN = Path(__file__).parent / "golden"
DK, BID = bytes(range(32)), bytes(range(16))
ENTRY = PayloadEntry(path="payload/model.onnx.enc", name="model.onnx", role="model",
                     plaintext_length=10000, chunk_size=4096)
PT = bytes(i % 251 for i in range(10000))


def test_format_version() -> None:
    assert FORMAT_VERSION == 1


def test_stream_known_answer() -> None:
    ct = encrypt_stream(DK, BID, ENTRY, 7, PT)
    assert len(ct) == 10000 + 3 * 16 == ENTRY.ciphertext_length
    assert hashlib.sha256(ct).hexdigest() == \
        "8923b0ee746c1510f74066f1bc6d912e7e9d71254e3d0182b0584b28d8770421"
    assert bytes(decrypt_stream(DK, BID, ENTRY, 7, ct)) == PT


def test_stream_matches_the_spec_written_with_raw_primitives() -> None:
    """Rebuild chunks 0 and 2 from the spec's formulas with bare HKDF + AES-GCM."""
    okm = HKDF(hashes.SHA256(), 39, BID, b"edgemed/v1/payload-key\x00payload/model.onnx.enc").derive(DK)
    key, prefix = okm[:32], okm[32:]
    aad = (b"edgemed-stream-v1\x00" + BID + struct.pack(">QQ", 7, 10000)
           + struct.pack(">H", 22) + b"payload/model.onnx.enc")
    assert aad == stream_aad(BID, ENTRY.path, 7, 10000)
    ct = encrypt_stream(DK, BID, ENTRY, 7, PT)
    c0 = AESGCM(key).encrypt(prefix + struct.pack(">I", 0) + b"\x00", PT[:4096], aad)
    c2 = AESGCM(key).encrypt(prefix + struct.pack(">I", 2) + b"\x01", PT[8192:], aad)
    assert ct[:4112] == c0 and ct[2 * 4112:] == c2


def test_empty_payload_is_one_final_chunk() -> None:
    e = PayloadEntry(path="payload/e.enc", name="e", role="model", plaintext_length=0, chunk_size=4096)
    ct = encrypt_stream(DK, BID, e, 1, b"")
    assert ct.hex() == "b121b6886b014e016fe012506f93a9ef" and e.chunks == 1
    assert bytes(decrypt_stream(DK, BID, e, 1, ct)) == b""


def test_commitment_aad_and_wrap_info() -> None:
    assert key_commitment(DK, BID) == \
        "f9e0d5a7a91f73477c59b4fdff193bcdede315be35d71f4df3bf3164dd5ee5c5"
    assert stream_aad(BID, ENTRY.path, 7, 10000).hex() == (
        "656467656d65642d73747265616d2d763100000102030405060708090a0b0c0d0e0f0000000000000007"
        "000000000000271000167061796c6f61642f6d6f64656c2e6f6e6e782e656e63")
    assert wrap_info(BID, "ab" * 16) == b"edgemed-bundle/v1/wrap\x00" + BID + b"\x00" + b"ab" * 16


def test_oms_statement_layout() -> None:
    st = build_statement("b", {"payload/model.onnx.enc": "22" * 32, "bundle.json": "11" * 32})
    assert hashlib.sha256(canonical_json(st)).hexdigest() == \
        "192390c8d33d962ac1868aa09a988d874ac9ff7badd7ef555d6e2cc7a8f0b7bd"
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://model_signing/signature/v1.0"
    assert st["predicate"]["serialization"]["ignore_paths"] == [
        ".git", ".gitattributes", ".github", ".gitignore", "keys", "model.sig"]
    assert [r["name"] for r in st["predicate"]["resources"]] == ["bundle.json", "payload/model.onnx.enc"]
    assert st["subject"][0]["digest"]["sha256"] == hashlib.sha256(bytes.fromhex("11" * 32 + "22" * 32)).hexdigest()


def test_archive_form_is_pinned() -> None:
    data = pack_archive({"bundle.json": b"{}\n", "payload/x.enc": b"abc", "model.sig": b"sig"})
    assert hashlib.sha256(data).hexdigest() == \
        "1e2820b0a405a502c25f2cbf166285d1e86f0639b41607235509e2642355deca"


def _masked_manifest(b: Path) -> dict:
    """bundle.json with random fields masked; io/preprocess are owned by IOSpec/PreprocessSpec
    (their own versioned formats), so they are checked against those classes instead."""
    d = json.loads((b / "bundle.json").read_bytes())
    d["io"], d["preprocess"] = "<IOSpec.to_dict()>", "<PreprocessSpec.to_dict()>"
    d["bundle_id"] = "<32 hex>"
    d["encryption"]["key_commitment"] = "<64 hex>"
    d["requires"]["packages"] = {p: "<this host's version>" for p in d["requires"]["packages"]}
    for p in d["payloads"]:
        p["plaintext_length"] = p["ciphertext_length"] = "<int>"
        if "uncompressed_length" in p:
            p["uncompressed_length"] = "<int>"
    return d


def test_bundle_json_golden(pristine: dict[str, Path], artifact: Any) -> None:
    got = _masked_manifest(pristine["r2"])
    full = json.loads((pristine["r2"] / "bundle.json").read_bytes())
    assert full["io"] == artifact.io.to_dict()
    assert full["preprocess"] == artifact.preprocess.to_dict()
    path = GOLDEN / "bundle.json"
    if os.environ.get("EDGEMED_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(canonical_json(got))
    assert got == json.loads(path.read_bytes())
    raw = (pristine["r2"] / "bundle.json").read_bytes()
    assert raw == canonical_json(json.loads(raw)), "bundle.json is written canonically"


def test_signature_and_wrapped_key_layout(pristine: dict[str, Path], keys: Keys) -> None:
    sig = json.loads((pristine["r2"] / "model.sig").read_bytes())
    assert sig["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert set(sig["verificationMaterial"]) == {"publicKey", "tlogEntries"}
    assert sig["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert len(sig["dsseEnvelope"]["signatures"]) == 1
    files = read_bundle(pristine["r2"])
    assert sorted(files.keys) == [f"keys/{keys.device.fingerprint}.json"]
    w = json.loads(files.keys[f"keys/{keys.device.fingerprint}.json"])
    assert sorted(w) == ["bundle_id", "device_id", "kind", "recipient", "scheme", "version", "wrapped"]
    assert w["kind"] == "edgemed-wrapped-key" and w["version"] == 1
    assert w["scheme"] == "hpke-x25519-sha256-aes256gcm"
    import base64

    assert len(base64.b64decode(w["wrapped"])) == 32 + 32 + 16  # enc || AES-256-GCM(data key)


@pytest.mark.parametrize("bad", ["../x", "/abs", "a\\b", "a\x00b", ".hidden", "a/../b", "", "a//b",
                                 "C:x/y", "a/b/c/d"])
def test_unsafe_paths_rejected(bad: str) -> None:
    from edgemed_runtime.bundle.format import check_relpath
    from edgemed_runtime.errors import IntegrityError

    with pytest.raises(IntegrityError) as ei:
        check_relpath(bad)
    assert ei.value.code == "unsafe-path"
