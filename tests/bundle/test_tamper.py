"""Tamper and fault cases: every one is refused with a specific error code, the device's
rollback state is unchanged, and the previously accepted bundle still opens and runs."""

from __future__ import annotations

import base64
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import edgemed_runtime as rt
from edgemed.bundle import Recipient
from edgemed.bundle.devices import wrapped_key_file
from edgemed_runtime.bundle import RollbackState, read_bundle
from edgemed_runtime.bundle.format import canonical_json
from edgemed_runtime.bundle.keys import load_private_key, publisher_hint
from edgemed_runtime.bundle.oms import build_signature, build_statement, pae
from edgemed_runtime.errors import (
    BundleError,
    DeviceMismatchError,
    ExpiredError,
    IntegrityError,
    InvalidInputError,
    RollbackError,
)

from .conftest import CREATED, EXPIRES, Keys, copy_bundle, open_args, resign, rewrite_archive

X = np.zeros((1, 1, 8, 8), np.float32)


@dataclass
class Ctx:
    keys: Keys
    pristine: dict[str, Path]
    tmp: Path
    state: Path
    make_bundle: Callable[..., Path]

    @property
    def dev_key(self) -> str:
        return f"keys/{self.keys.device.fingerprint}.json"


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[Path, Ctx], dict[str, Any] | None]
    exc: type[Exception]
    code: str
    base: str = "r2"
    accepted: str = "r1"
    extra: dict[str, Any] = field(default_factory=dict)


# -- mutators ----------------------------------------------------------------------------------
def _rw(path: Path, fn: Callable[[bytes], bytes]) -> None:
    path.write_bytes(fn(path.read_bytes()))


def flip_mid(rel: str) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        p = b / (c.dev_key if rel == "KEY" else rel)

        def f(d: bytes) -> bytes:
            a = bytearray(d)
            a[len(a) // 2] ^= 0x01
            return bytes(a)
        _rw(p, f)
    return m


def truncate(rel: str) -> Callable[[Path, Ctx], None]:
    return lambda b, c: _rw(b / (c.dev_key if rel == "KEY" else rel), lambda d: d[: len(d) // 2])


def append(rel: str) -> Callable[[Path, Ctx], None]:
    return lambda b, c: _rw(b / (c.dev_key if rel == "KEY" else rel), lambda d: d + b"\x00edgemed")


def delete(rel: str) -> Callable[[Path, Ctx], None]:
    return lambda b, c: (b / (c.dev_key if rel == "KEY" else rel)).unlink()


def flip_sig_value(b: Path, c: Ctx) -> None:
    doc = json.loads((b / "model.sig").read_bytes())
    raw = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 0x01
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    (b / "model.sig").write_text(json.dumps(doc))


def flip_wrapped(b: Path, c: Ctx) -> None:
    p = b / c.dev_key
    doc = json.loads(p.read_bytes())
    raw = bytearray(base64.b64decode(doc["wrapped"]))
    raw[-1] ^= 0x01
    doc["wrapped"] = base64.b64encode(bytes(raw)).decode()
    p.write_bytes(canonical_json(doc))


def edit_manifest(fn: Callable[[dict], None], *, sign: bool) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        d = json.loads((b / "bundle.json").read_bytes())
        fn(d)
        (b / "bundle.json").write_bytes(canonical_json(d))
        if sign:
            resign(b, c.keys.publisher.private_path)
    return m


def reencode_manifest(b: Path, c: Ctx) -> None:
    d = json.loads((b / "bundle.json").read_bytes())
    (b / "bundle.json").write_text(json.dumps(d, separators=(",", ":")))


def sign_with(key_attr: str, *, keep_hint: bool) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        resign(b, getattr(c.keys, key_attr).private_path)
        if not keep_hint:
            doc = json.loads((b / "model.sig").read_bytes())
            del doc["verificationMaterial"]["publicKey"]["hint"]
            (b / "model.sig").write_text(json.dumps(doc))
    return m


def signed_names(*names: str) -> Callable[[Path, Ctx], None]:
    """The publisher signs a statement that also lists ``names`` (as a buggy signer might)."""
    def m(b: Path, c: Ctx) -> None:
        import hashlib

        files = read_bundle(b).files
        digests = {p: hashlib.sha256(v).hexdigest() for p, v in files.items()}
        digests.update({n: "0" * 64 for n in names})
        stmt = canonical_json(build_statement("b", digests))
        priv = load_private_key(c.keys.publisher.private_path)
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        der = priv.sign(pae(stmt), ec.ECDSA(hashes.SHA256()))
        (b / "model.sig").write_text(json.dumps(build_signature(stmt, der, publisher_hint(priv.public_key()))))
    return m


def payload_from(src: str, *, sign: bool) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        rel = "payload/model.onnx.enc"
        (b / rel).write_bytes((c.pristine[src] / rel).read_bytes())
        if sign:
            resign(b, c.keys.publisher.private_path)
    return m


def chunks(op: str, *, sign: bool = True, fix_length: bool = False) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        p = b / "payload/model.onnx.enc"
        d = p.read_bytes()
        n = 4096 + 16
        parts = [d[i:i + n] for i in range(0, len(d), n)]
        assert len(parts) >= 3
        if op == "swap":
            parts[0], parts[1] = parts[1], parts[0]
        elif op == "drop_last":
            parts = parts[:-1]
        elif op == "drop_first":
            parts = parts[1:]
        p.write_bytes(b"".join(parts))
        if fix_length:
            man = json.loads((b / "bundle.json").read_bytes())
            e = man["payloads"][0]
            e["plaintext_length"] = sum(len(x) - 16 for x in parts)
            e["ciphertext_length"] = sum(len(x) for x in parts)
            (b / "bundle.json").write_bytes(canonical_json(man))
        if sign:
            resign(b, c.keys.publisher.private_path)
    return m


def other_device_key(*, rename_recipient: bool) -> Callable[[Path, Ctx], None]:
    """Replace our keys/ entry with the one wrapped for device2."""
    def m(b: Path, c: Ctx) -> None:
        from edgemed.bundle import add_device

        add_device(b, Recipient.load(c.keys.device2.public_path), unwrap_key=c.keys.device.private_path,
                   trust=c.keys.publisher.public_path)
        theirs = json.loads((b / f"keys/{c.keys.device2.fingerprint}.json").read_bytes())
        if rename_recipient:
            theirs["recipient"] = c.keys.device.fingerprint
        (b / c.dev_key).write_bytes(canonical_json(theirs))
    return m


def key_from_bundle(src: str, *, edit_id: bool) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        d = json.loads((c.pristine[src] / c.dev_key).read_bytes())
        if edit_id:
            d["bundle_id"] = json.loads((b / "bundle.json").read_bytes())["bundle_id"]
        (b / c.dev_key).write_bytes(canonical_json(d))
    return m


def swapped_data_key(b: Path, c: Ctx) -> None:
    """An attacker wraps a data key of their choosing for our (public) device key."""
    bid = json.loads((b / "bundle.json").read_bytes())["bundle_id"]
    r = Recipient.load(c.keys.device.public_path)
    rel, data = wrapped_key_file(os.urandom(32), bid, r)
    (b / rel).write_bytes(data)


def only_other_device(b: Path, c: Ctx) -> None:
    from edgemed.bundle import add_device

    add_device(b, Recipient.load(c.keys.device2.public_path), unwrap_key=c.keys.device.private_path,
               trust=c.keys.publisher.public_path)
    (b / c.dev_key).unlink()


def add_file(rel: str, data: bytes = b"hello") -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(data)
    return m


def symlink_payload(b: Path, c: Ctx) -> None:
    p = b / "payload/model.onnx.enc"
    real = c.tmp / "elsewhere.enc"
    real.write_bytes(p.read_bytes())
    p.unlink()
    p.symlink_to(real)


def symlink_extra(b: Path, c: Ctx) -> None:
    (b / "notes").symlink_to("/etc/hostname")


def oversize(rel: str, size: int) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        p = b / (c.dev_key if rel == "KEY" else rel)
        p.write_bytes(p.read_bytes() + b" " * size)
    return m


def rebuild_archive(edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> Callable[[Path, Ctx], None]:
    def m(b: Path, c: Ctx) -> None:
        rewrite_archive(b, edit)
    return m


def _member(name: str, data: bytes = b"x", type_: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    ti = tarfile.TarInfo(name)
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    ti.type = type_
    ti.linkname = link
    return ti, data


def archive_flip_payload(b: Path, c: Ctx) -> None:
    with tarfile.open(b, "r:") as tf:
        off = next(m.offset_data for m in tf if m.name.startswith("payload/"))
    a = bytearray(b.read_bytes())
    a[off + 100] ^= 0x01
    b.write_bytes(bytes(a))


def _swap_payloads(b: Path, c: Ctx) -> None:
    g, w = b / "payload/model.onnx.enc", b / "payload/model.onnx.weights.enc"
    gd, wd = g.read_bytes(), w.read_bytes()
    g.write_bytes(wd)
    w.write_bytes(gd)
    resign(b, c.keys.publisher.private_path)


def as_kw(**kw: Any) -> Callable[[Path, Ctx], dict[str, Any]]:
    return lambda b, c: kw


def kw_from(fn: Callable[[Ctx], dict[str, Any]]) -> Callable[[Path, Ctx], dict[str, Any]]:
    return lambda b, c: fn(c)


def crafted_key(kind: str) -> Callable[[Ctx], Any]:
    def f(c: Ctx) -> Any:
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        if kind == "ed25519":
            return ed25519.Ed25519PrivateKey.generate().public_key()
        return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return f


def seal_fresh(**opts: Any) -> Callable[[Path, Ctx], None]:
    """Replace the bundle with a freshly sealed one (release 2) with other options."""
    def m(b: Path, c: Ctx) -> None:
        import shutil

        shutil.rmtree(b)
        c.make_bundle(b, 2, **opts)
    return m


I, B, R, E, D = IntegrityError, BundleError, RollbackError, ExpiredError, DeviceMismatchError

CASES = [
    # every file x {flip one byte, truncate, append, delete}
    Case("manifest-flip", flip_mid("bundle.json"), I, "hash-mismatch"),
    Case("manifest-truncate", truncate("bundle.json"), I, "hash-mismatch"),
    Case("manifest-append", append("bundle.json"), I, "hash-mismatch"),
    Case("manifest-delete", delete("bundle.json"), I, "missing-file"),
    Case("sig-flip", flip_sig_value, I, "signature-invalid"),
    Case("sig-flip-byte", flip_mid("model.sig"), I, "signature-invalid"),
    Case("sig-truncate", truncate("model.sig"), I, "bad-signature-format"),
    Case("sig-append", append("model.sig"), I, "bad-signature-format"),
    Case("sig-delete", delete("model.sig"), I, "missing-file"),
    Case("payload-flip", flip_mid("payload/model.onnx.enc"), I, "hash-mismatch"),
    Case("payload-truncate", truncate("payload/model.onnx.enc"), I, "hash-mismatch"),
    Case("payload-append", append("payload/model.onnx.enc"), I, "hash-mismatch"),
    Case("payload-delete", delete("payload/model.onnx.enc"), I, "missing-file"),
    Case("key-flip", flip_wrapped, I, "unwrap-failed"),
    Case("key-flip-byte", flip_mid("KEY"), I, "wrapped-key-invalid"),  # hits the scheme
    Case("key-truncate", truncate("KEY"), I, "wrapped-key-invalid"),
    Case("key-append", append("KEY"), I, "wrapped-key-invalid"),
    Case("key-delete", delete("KEY"), D, "no-device-key"),
    Case("archive-flip", archive_flip_payload, I, "hash-mismatch", base="r2a"),
    Case("archive-truncate", lambda b, c: _rw(b, lambda d: d[: len(d) // 2]), I, "bad-archive", base="r2a"),
    Case("archive-append", lambda b, c: _rw(b, lambda d: d + b"\x01" * 700), I, "trailing-data", base="r2a"),
    Case("archive-delete", lambda b, c: b.unlink(), InvalidInputError, "not-found", base="r2a"),
    Case("weights-flip", flip_mid("payload/model.onnx.weights.enc"), I, "hash-mismatch", base="r2s"),
    Case("weights-truncate", truncate("payload/model.onnx.weights.enc"), I, "hash-mismatch", base="r2s"),
    Case("weights-delete", delete("payload/model.onnx.weights.enc"), I, "missing-file", base="r2s"),
    Case("weights-swapped-with-graph-resigned", lambda b, c: _swap_payloads(b, c), I, "length-mismatch", base="r2s"),
    # extra files, links, special entries
    Case("extra-file-root", add_file("notes.txt"), I, "unsigned-file"),
    Case("extra-file-payload", add_file("payload/extra.enc"), I, "unsigned-file"),
    Case("extra-git-file", add_file(".gitignore"), I, "unsafe-path"),
    Case("symlink-payload", symlink_payload, I, "symlink"),
    Case("symlink-extra", symlink_extra, I, "symlink"),
    Case("archive-symlink", rebuild_archive(lambda ms: ms.append(_member("notes", type_=tarfile.SYMTYPE, link="/etc/passwd"))), I, "symlink", base="r2a"),
    Case("archive-hardlink", rebuild_archive(lambda ms: ms.append(_member("notes", type_=tarfile.LNKTYPE, link="bundle.json"))), I, "hardlink", base="r2a"),
    Case("archive-fifo", rebuild_archive(lambda ms: ms.append(_member("notes", type_=tarfile.FIFOTYPE))), I, "not-regular-file", base="r2a"),
    Case("archive-duplicate", rebuild_archive(lambda ms: ms.append(_member("bundle.json", b"{}"))), I, "duplicate-entry", base="r2a"),
    # manifest / signature
    Case("manifest-reencoded", reencode_manifest, I, "hash-mismatch"),
    Case("manifest-release-bumped", edit_manifest(lambda d: d.update(release=99), sign=False), I, "hash-mismatch"),
    Case("signed-by-other-key", sign_with("other_publisher", keep_hint=True), I, "wrong-publisher"),
    Case("signed-by-other-key-no-hint", sign_with("other_publisher", keep_hint=False), I, "signature-invalid"),
    Case("trust-ed25519", kw_from(lambda c: {"trust": crafted_key("ed25519")(c)}), B, "unsupported-publisher-key"),
    Case("trust-rsa", kw_from(lambda c: {"trust": crafted_key("rsa")(c)}), B, "unsupported-publisher-key"),
    Case("no-trust", as_kw(trust=None), B, "no-trust-anchor"),
    # unsafe names
    Case("signed-name-dotdot", signed_names("../evil"), I, "unsafe-path"),
    Case("signed-name-absolute", signed_names("/etc/passwd"), I, "unsafe-path"),
    Case("signed-name-backslash", signed_names("payload\\evil"), I, "unsafe-path"),
    Case("signed-name-nul", signed_names("payload/a\x00b"), I, "unsafe-path"),
    Case("file-name-backslash", add_file("evil\\name"), I, "unsafe-path"),
    Case("manifest-payload-dotdot", edit_manifest(lambda d: d["payloads"][0].update(path="payload/../x"), sign=True), I, "unsafe-path"),
    Case("archive-name-dotdot", rebuild_archive(lambda ms: ms.append(_member("../evil"))), I, "unsafe-path", base="r2a"),
    Case("archive-name-absolute", rebuild_archive(lambda ms: ms.append(_member("/tmp/evil"))), I, "unsafe-path", base="r2a"),
    # payload / chunk attacks (re-signed cases test the AEAD layer under the signature)
    Case("payload-from-older-bundle", payload_from("r1", sign=False), I, "hash-mismatch"),
    Case("payload-from-older-bundle-resigned", payload_from("r1", sign=True), I, "decrypt-failed"),
    Case("chunks-reordered", chunks("swap", sign=False), I, "hash-mismatch", base="r2c"),
    Case("chunks-reordered-resigned", chunks("swap"), I, "decrypt-failed", base="r2c"),
    Case("chunk-dropped-resigned", chunks("drop_last"), I, "length-mismatch", base="r2c"),
    Case("last-chunk-dropped-length-fixed", chunks("drop_last", fix_length=True), I, "decrypt-failed", base="r2c"),
    Case("first-chunk-dropped-length-fixed", chunks("drop_first", fix_length=True), I, "decrypt-failed", base="r2c"),
    # device keys
    Case("key-for-other-device", other_device_key(rename_recipient=False), I, "wrapped-key-invalid"),
    Case("key-for-other-device-relabelled", other_device_key(rename_recipient=True), I, "unwrap-failed"),
    Case("key-from-other-bundle", key_from_bundle("r1", edit_id=False), I, "wrapped-key-invalid"),
    Case("key-from-other-bundle-relabelled", key_from_bundle("r1", edit_id=True), I, "unwrap-failed"),
    Case("swapped-data-key", swapped_data_key, I, "key-commitment"),
    Case("only-other-devices", only_other_device, D, "no-device-key"),
    Case("device-key-ed25519", kw_from(lambda c: {"device_key": __import__(
        "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["x"]).Ed25519PrivateKey.generate()}),
        B, "unsupported-device-key"),
    # policy
    Case("expired", as_kw(now=EXPIRES + timedelta(seconds=1)), E, "expired"),
    Case("expired-at-boundary", as_kw(now=EXPIRES), E, "expired"),
    Case("rollback-lower-release", lambda b, c: None, R, "rollback", base="r1", accepted="r2"),
    Case("release-reused", seal_fresh(), R, "release-reused", accepted="r2"),
    Case("wrong-hardware-id", seal_fresh(hardware_ids=("ward3-tablet",)), D, "hardware-mismatch", extra={"hardware_id": "ward4-tablet"}),
    Case("missing-hardware-id", seal_fresh(hardware_ids=("ward3-tablet",)), D, "hardware-mismatch"),
    Case("wrong-target", as_kw(target="jetson-orin"), D, "target-mismatch"),
    Case("format-version-2", edit_manifest(lambda d: d.update(format_version=2), sign=True), B, "format-version"),
    Case("runtime-too-old", edit_manifest(lambda d: d.update(min_runtime_version="99.0"), sign=True), B, "runtime-too-old"),
    # oversized inputs / declared lengths
    Case("oversized-manifest", oversize("bundle.json", 1 << 20), I, "oversized"),
    Case("oversized-signature", oversize("model.sig", 1 << 20), I, "oversized"),
    Case("oversized-key-file", oversize("KEY", 64 << 10), I, "oversized"),
    Case("declared-length-huge", edit_manifest(lambda d: d["payloads"][0].update(plaintext_length=1 << 40), sign=True), I, "manifest-invalid"),
    Case("declared-length-wrong", edit_manifest(lambda d: d["payloads"][0].update(
        plaintext_length=d["payloads"][0]["plaintext_length"] + 1,
        ciphertext_length=d["payloads"][0]["ciphertext_length"] + 1), sign=True), I, "length-mismatch"),
    Case("declared-ciphertext-inconsistent", edit_manifest(lambda d: d["payloads"][0].update(ciphertext_length=7), sign=True), I, "length-mismatch"),
    Case("chunk-size-zero", edit_manifest(lambda d: d["payloads"][0].update(chunk_size=0), sign=True), I, "manifest-invalid"),
]


# codes of the signature and AEAD layers that no edit of a bundle reaches
NOT_BY_TAMPERING = {
    "statement-invalid": "a malformed statement that verifies needs the publisher's key",
    "wrong-device-key-type": "the caller passed a key of the wrong kind, whatever the bundle",
}


def test_every_signature_and_aead_refusal_has_a_case() -> None:
    """Each code ``bundle/oms.py`` and ``bundle/crypto.py`` raise is met by a case above (a new
    refusal there needs one), and the case names are distinct."""
    root = Path(rt.__file__).parent / "bundle"
    raised = {code for f in ("oms.py", "crypto.py")
              for code in re.findall(r'code="([a-z0-9-]+)"', (root / f).read_text())}
    missing = raised - set(NOT_BY_TAMPERING) - {c.code for c in CASES}
    assert raised and not missing, f"no tamper case for {sorted(missing)}"
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_and_previous_stays_usable(case: Case, keys: Keys, pristine: dict[str, Path],
                                           make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt.open(pristine[case.accepted], **open_args(keys, state)).close()
    before = RollbackState(state).get("tiny")
    src = pristine[case.base]
    b = copy_bundle(src, tmp_path / ("bundle" + (".edgemed" if src.is_file() else "")))
    ctx = Ctx(keys, pristine, tmp_path, state, make_bundle)
    kw = {**(case.mutate(b, ctx) or {}), **case.extra}
    with pytest.raises(case.exc) as ei:
        rt.open(b, **{**open_args(keys, state), **kw})
    assert ei.value.code == case.code, str(ei.value)
    assert ei.value.message and "Traceback" not in str(ei.value)
    # the device's state did not move and the accepted bundle still opens and runs
    assert RollbackState(state).get("tiny") == before
    with rt.open(pristine[case.accepted], **open_args(keys, state)) as s:
        assert s.run({"input": X})["logits"].shape == (1, 2)


def test_seal_refuses_non_p256_publisher_key(artifact: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from edgemed.bundle import SealOptions, seal

    with pytest.raises(BundleError) as ei:
        seal(artifact, tmp_path / "b", publisher_key=ed25519.Ed25519PrivateKey.generate(),
             options=SealOptions(family="tiny", release=1))
    assert ei.value.code == "unsupported-publisher-key"
    assert not (tmp_path / "b").exists()


def test_wrong_passphrase(artifact: Any, tmp_path: Path, keys: Keys, pristine: dict[str, Path]) -> None:
    from edgemed.bundle import SealOptions, generate_keypair, seal

    dev = generate_keypair(tmp_path, kind="device", name="locked", passphrase="correct horse")
    b = seal(artifact, tmp_path / "b", publisher_key=keys.publisher.private_path,
             options=SealOptions(family="tiny", release=1, expires=EXPIRES),
             recipients=[Recipient.load(dev.public_path)], created=CREATED)
    state = tmp_path / "state"
    for pw, code in ((None, "bad-passphrase"), ("wrong", "bad-passphrase")):
        with pytest.raises(BundleError) as ei:
            rt.open(b, **open_args(keys, state, device_key=dev.private_path, device_key_password=pw))
        assert ei.value.code == code
    with rt.open(b, **open_args(keys, state, device_key=dev.private_path,
                                device_key_password="correct horse")) as s:
        assert s.info["release"] == 1

