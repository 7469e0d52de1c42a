"""Verify, inspect and open bundles on a device.

Order (docs/bundle-format.md, "Loading"): read files (limits, names, no links) -> OMS signature
with the pinned publisher key -> every signed SHA-256 -> bundle.json -> format version, runtime
version, expiry, hardware id, target -> release counter vs the device's state -> unwrap the data
key -> key commitment -> decrypt into memory -> backend session from bytes -> smoke inference ->
persist the accepted release. The payloads' SHA-256 checks run on a second thread while
decrypting and creating the session; nothing is handed out or recorded before they pass (the
plaintext was already authenticated by AES-GCM under the signed key commitment). Nothing
decrypted is ever written to disk. Each call builds its own verifier state.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import (
    BundleError,
    DeviceMismatchError,
    EdgemedError,
    ExpiredError,
    IntegrityError,
    InvalidInputError,
)
from ..iospec import IOSpec
from ..preprocess import PreprocessSpec
from ..session import Session
from .compress import decompress_payload
from .container import BundleFiles, FileRef, read_bundle
from .crypto import (
    check_commitment,
    decrypt_stream,
    scheme_for,
    unwrap_data_key,
)
from .format import (
    KEYS_DIR,
    MANIFEST_FILE,
    WRAPPED_KEY_KIND,
    BundleManifest,
    parse_manifest,
    parse_version,
)
from .keys import check_publisher_key, fingerprint, load_private_key, load_public_key
from .oms import SignedStatement, check_digest, check_files, verify_signature
from .state import RollbackState


def runtime_version() -> str:
    """This runtime's version (compared with bundle.json ``min_runtime_version``)."""
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, file hashes and manifest checks passed."""

    files: BundleFiles
    manifest: BundleManifest
    statement: SignedStatement
    pending: frozenset[str] = frozenset()  # payloads whose SHA-256 is still to be checked


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)


def verify_bundle(
    source: str | os.PathLike[str] | BundleFiles,
    *,
    trust: Any,
    now: datetime | None = None,
    hardware_id: str | None = None,
    target: str | None = None,
    require_hardware: bool = True,
    check_expiry: bool = True,
    defer_payload_hashes: bool = False,
) -> VerifiedBundle:
    """Verify a bundle's signature and manifest (no device key needed; nothing decrypted).

    Args:
        source: bundle directory, ``.edgemed`` archive, or already-read BundleFiles.
        trust: the pinned publisher public key (path, PEM bytes or key object), ECDSA P-256.
        now: the time to check expiry against (default: now, UTC).
        hardware_id: this device's hardware id; checked against ``hardware_ids`` when given or
            when the bundle restricts hardware.
        target: this device's target profile name; checked when given.
        require_hardware: refuse a hardware-restricted bundle when no ``hardware_id`` is given
            (True on devices; ``edgemed verify`` passes False).
        check_expiry: refuse an expired bundle (``inspect`` passes False).
        defer_payload_hashes: leave the payloads on disk and their SHA-256 checks to
            ``decrypt_payloads``, which hashes each chunk as it decrypts it (nothing is
            returned or recorded before the digests match). Everything else is checked here.
    Returns:
        a VerifiedBundle.
    Raises:
        IntegrityError / BundleError / ExpiredError / DeviceMismatchError with specific codes.
    """
    if trust is None:
        raise BundleError("no publisher key pinned", expected="trust=<publisher .pub>",
                          fix="pass the publisher's public key (edgemed keys generate)",
                          code="no-trust-anchor")
    files = source if isinstance(source, BundleFiles) else read_bundle(
        source, lazy=defer_payload_hashes)
    trust_key = load_public_key(trust, what="publisher public key")
    check_publisher_key(trust_key)
    statement = verify_signature(files.signature, trust_key)
    deferred = frozenset(p for p in files.files if p != MANIFEST_FILE) \
        if defer_payload_hashes else frozenset()
    check_files(statement, files.files, defer=deferred)
    m = parse_manifest(files.files[MANIFEST_FILE])
    declared = {p.path for p in m.payloads} | {MANIFEST_FILE}
    if set(files.files) != declared:
        raise IntegrityError("signed files differ from the payloads bundle.json declares",
                             expected=", ".join(sorted(declared)),
                             found=", ".join(sorted(files.files))[:200], code="undeclared-file")
    if parse_version(m.min_runtime_version) > parse_version(runtime_version()):
        raise BundleError("bundle needs a newer runtime", expected=f">= {m.min_runtime_version}",
                          found=runtime_version(), fix="upgrade edgemed_runtime",
                          code="runtime-too-old")
    t = _now(now)
    if check_expiry and t >= m.expires_at:
        raise ExpiredError("bundle has expired", expected=f"before {m.expires}",
                           found=t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           fix="install a newer bundle from the publisher", code="expired")
    if m.hardware_ids and (require_hardware or hardware_id is not None) \
            and hardware_id not in m.hardware_ids:
        raise DeviceMismatchError(
            "bundle is not meant for this hardware", expected=", ".join(m.hardware_ids)[:200],
            found=repr(hardware_id), fix="pass hardware_id=, or ask for a bundle sealed for "
            "this device", code="hardware-mismatch",
        )
    if target is not None and m.target.get("name") != target:
        raise DeviceMismatchError("bundle was built for another target profile", expected=target,
                                  found=str(m.target.get("name")), code="target-mismatch")
    return VerifiedBundle(files, m, statement, deferred)


def wrapped_key_entry(vb: VerifiedBundle, recipient: str) -> Mapping[str, Any]:
    """The parsed ``keys/<recipient>.json`` of a verified bundle (checked to name it)."""
    data = vb.files.keys.get(f"{KEYS_DIR}/{recipient}.json")
    if data is None:
        raise DeviceMismatchError(
            "bundle holds no data key for this device", expected=f"{KEYS_DIR}/{recipient}.json",
            found=f"{len(vb.files.keys)} device key(s)",
            fix="ask the publisher to run: edgemed keys add-device", code="no-device-key",
        )
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        d = None
    if not isinstance(d, dict) or d.get("kind") != WRAPPED_KEY_KIND or d.get("version") != 1 \
            or not isinstance(d.get("scheme"), str) or not isinstance(d.get("wrapped"), str):
        raise IntegrityError("wrapped key file is malformed", found=f"{KEYS_DIR}/{recipient}.json",
                             code="wrapped-key-invalid")
    if d.get("bundle_id") != vb.manifest.bundle_id or d.get("recipient") != recipient:
        raise IntegrityError("wrapped key file belongs to another bundle or device",
                             expected=f"bundle {vb.manifest.bundle_id}, device {recipient}",
                             found=f"bundle {d.get('bundle_id')}, device {d.get('recipient')}"[:200],
                             code="wrapped-key-invalid")
    return d


class _DigestChecker:
    """Checks the SHA-256 of deferred payloads on one worker thread (hashlib releases the GIL),
    overlapping decryption and backend session creation. ``result()`` joins and raises
    ``hash-mismatch``; callers hand nothing out before it returns."""

    def __init__(self, vb: VerifiedBundle) -> None:
        self._vb = vb
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Any] = []

    def submit(self, name: str, data: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgemed-sha256")
        self._futures.append(self._pool.submit(check_digest, self._vb.statement, name, data))

    def result(self) -> None:
        try:
            for f in self._futures:
                f.result()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _read_ref(ref: FileRef) -> Any:
    """Read a FileRef into a private buffer (what is hashed is what is decrypted)."""
    buf = np.empty(ref.size, dtype=np.uint8) if ref.size >= 1 << 20 else bytearray(ref.size)
    view = memoryview(buf).cast("B")
    got = 0
    with open(ref.path, "rb", buffering=0) as f:
        f.seek(ref.offset)
        while got < ref.size:
            k = f.readinto(view[got:])
            if not k:
                break
            got += k
    return view[:got]


def decrypt_payloads(vb: VerifiedBundle, device_key: Any, *,
                     password: str | bytes | None = None) -> dict[str, Any]:
    """Unwrap the data key with the device key, check the commitment, decrypt every payload.

    Returns ``{plaintext name: buffer}`` (bytearray or uint8 array; in memory only, wipe it
    after use). Payload digests still pending on ``vb`` are checked meanwhile on a second
    thread; a digest mismatch is reported (``hash-mismatch``) in preference to any other
    failure of a payload.
    """
    checker = _DigestChecker(vb)
    out = _decrypt(vb, device_key, password, checker)
    try:
        checker.result()
    except BaseException:
        wipe(out)
        raise
    return out


def _decrypt(vb: VerifiedBundle, device_key: Any, password: str | bytes | None,
             checker: _DigestChecker) -> dict[str, Any]:
    """Decrypt every payload; deferred digests go to ``checker`` (joined on failure here, by
    the caller on success)."""
    try:
        priv = load_private_key(device_key, password=password, what="device private key")
        scheme_for(priv.public_key())  # refuse unsupported device key types up front
        recipient = fingerprint(priv.public_key())
        w = wrapped_key_entry(vb, recipient)
        m = vb.manifest
        dk = unwrap_data_key(w["scheme"], w["wrapped"], priv, m.bundle_id_bytes, recipient)
        check_commitment(dk, m.bundle_id_bytes, m.key_commitment)
    except BaseException:
        checker.close()
        raise
    out: dict[str, Any] = {}
    try:
        for p in m.payloads:
            src = vb.files.files[p.path]
            if isinstance(src, FileRef):
                if p.path not in vb.pending:
                    raise IntegrityError("payload was not scheduled for verification",
                                         found=p.path, code="hash-mismatch")
                src = _read_ref(src)
            if p.path in vb.pending:
                checker.submit(p.path, src)
            plain = decrypt_stream(dk, m.bundle_id_bytes, p, m.release, src)
            if p.compression != "none":
                # authenticated above; inflate with a hard cap at the signed size
                try:
                    out[p.name] = decompress_payload(p, plain)
                finally:
                    wipe({"stored": plain})
            else:
                out[p.name] = plain
    except BaseException:
        wipe(out)
        checker.result()  # a digest mismatch explains the failure better
        raise
    return out


def wipe(buffers: Mapping[str, Any]) -> None:
    """Overwrite decrypted buffers (bytearray / uint8 arrays) with zeros, in place."""
    for b in buffers.values():
        n = len(b)
        if n:
            ctypes.memset((ctypes.c_char * n).from_buffer(b), 0, n)


def _smoke(sess: Session) -> None:
    io = sess.io
    x = np.zeros(io.input_shape, dtype=np.dtype(io.input_dtype))
    try:
        outs = sess.run({io.input_name: x})
    except EdgemedError as exc:
        raise BundleError("smoke inference failed", found=exc.message, code="smoke-failed") from None
    if not outs or not all(np.all(np.isfinite(np.asarray(o, dtype=np.float64))) for o in outs.values()):
        raise BundleError("smoke inference gave no finite output", code="smoke-failed")


def open_verified(
    vb: VerifiedBundle,
    *,
    device_key: Any,
    device_key_password: str | bytes | None = None,
    state: RollbackState,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    persist: bool = True,
    smoke: bool = True,
) -> Session:
    """Open an already verified bundle (see ``open_bundle``)."""
    from ..backends import get_backend

    m = vb.manifest
    state.check(m)
    try:
        io = IOSpec.from_dict(m.raw["io"])
        pre = PreprocessSpec.from_dict(m.raw["preprocess"])
    except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
        raise IntegrityError("bundle.json io/preprocess is invalid", found=str(exc)[:200],
                             code="manifest-invalid") from None
    name = backend or m.backend
    be = get_backend(name)
    if m.artifact_format not in be.formats:
        raise InvalidInputError(f"backend {name!r} cannot run {m.artifact_format!r} models",
                                expected=", ".join(be.formats), found=m.artifact_format,
                                code="backend-format")
    weights = m.weights_payload
    if weights is not None and name != "onnxruntime":
        raise InvalidInputError(f"backend {name!r} cannot load split weights",
                                expected="backend onnxruntime", found=name,
                                fix="re-seal with split_weights=False", code="backend-format")
    # payload digests are checked on a second thread while we decrypt and create the
    # session; the session is discarded unless they all match
    checker = _DigestChecker(vb)
    plain = _decrypt(vb, device_key, device_key_password, checker)
    model_name = m.model_payload.name
    opts = {**dict(m.backend_options), **dict(options or {})}
    try:
        if weights is not None:
            # onnxruntime reads the decrypted tensors in place; they are wiped when it closes
            from .weights import open_ort_from_memory

            graph_buf, weight_buf = plain.pop(model_name), plain.pop(weights.name)
            wipe(plain)
            try:
                bs = open_ort_from_memory(graph_buf, weight_buf, opts)
            except BaseException:
                wipe({"graph": graph_buf, "weights": weight_buf})
                raise
        else:
            try:
                extras = {k: bytes(v) for k, v in plain.items() if k != model_name}
                if extras:
                    opts["extra_files"] = extras
                bs = be.open(bytes(plain[model_name]), io, opts)
            finally:
                wipe(plain)
    except BaseException:
        checker.result()  # a digest mismatch explains the failure better
        raise
    try:
        checker.result()
    except BaseException:
        bs.close()
        raise
    sess = Session(bs, io, pre, name, info={
        "format": m.artifact_format, "bundle_id": m.bundle_id, "family": m.family,
        "release": m.release, "version": m.version, "path": str(vb.files.source),
        "target": dict(m.target),
    })
    try:
        if smoke:
            _smoke(sess)
        if persist:
            state.record(m)
    except BaseException:
        sess.close()
        raise
    return sess


def open_bundle(
    path: str | os.PathLike[str],
    *,
    trust: Any = None,
    device_key: Any = None,
    device_key_password: str | bytes | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    hardware_id: str | None = None,
    target: str | None = None,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    persist: bool = True,
) -> Session:
    """Verify, decrypt (in memory) and open a bundle; the runtime's ``open`` calls this.

    Args:
        path: bundle directory or ``.edgemed`` archive.
        trust: the pinned publisher public key (ECDSA P-256; path, PEM bytes or key object).
        device_key: this device's private key (path, PEM bytes or key object).
        device_key_password: its passphrase, if any.
        state_dir: where accepted releases are kept (default ``$EDGEMED_STATE_DIR`` or
            ``~/.edgemed/state``).
        hardware_id: this device's hardware id.
        target: this device's target profile name (checked when given).
        backend, options: override the bundle's backend / merge over its backend options.
        now: time for the expiry check (tests).
        persist: record the release as accepted after the smoke inference (default True).
    Returns:
        a Session; ``session.info`` names the bundle id, family, release and version.
    Raises:
        BundleError and subclasses (IntegrityError, RollbackError, ExpiredError,
        DeviceMismatchError), each with a specific ``code``; BackendError if the backend fails.
    """
    if device_key is None:
        raise BundleError("no device key given", expected="device_key=<device private key>",
                          fix="pass the device's private key", code="no-device-key")
    vb = verify_bundle(path, trust=trust, now=now, hardware_id=hardware_id, target=target,
                       defer_payload_hashes=True)
    return open_verified(vb, device_key=device_key, device_key_password=device_key_password,
                         state=RollbackState(state_dir), backend=backend, options=options,
                         persist=persist)


def unverified_signed_files(sig: bytes) -> dict[str, str]:
    """``{path: sha256}`` listed in a model.sig, WITHOUT verifying it ({} if unreadable)."""
    try:
        doc = json.loads(sig)
        st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        return {r["name"]: r["digest"] for r in st["predicate"]["resources"]}
    except Exception:  # inspect is best-effort on a damaged signature
        return {}


def inspect_bundle(path: str | os.PathLike[str], *, trust: Any = None) -> dict[str, Any]:
    """Describe a bundle without decrypting it (and verify it when ``trust`` is given).

    Returns a JSON-ready dict: ``kind`` ("bundle"), ``path``, ``archive``, ``verified``, the main
    bundle.json fields at top level (bundle_id, family, release, version, expires, format,
    backend, target, io, preprocess, labels, metrics, provenance...), ``model_file`` and
    ``size_bytes`` (plaintext, after any decompression), ``files`` (``{path: {"bytes", "sha256_signed"}}``), ``devices``
    (one per wrapped key: ``recipient``, ``device_id``, ``scheme``) and ``manifest`` (all of
    bundle.json).

    Raises:
        IntegrityError / BundleError: the bundle cannot be read or (with ``trust``) verified.
    """
    files = read_bundle(path)
    if trust is not None:
        vb = verify_bundle(files, trust=trust, require_hardware=False, check_expiry=False)
        m, signed, verified = vb.manifest, dict(vb.statement.resources), True
    else:
        m, signed, verified = parse_manifest(files.files.get(MANIFEST_FILE, b"")), \
            unverified_signed_files(files.signature), False
    devices = []
    for kp, data in sorted(files.keys.items()):
        try:
            d = json.loads(data)
            devices.append({"recipient": d.get("recipient"), "device_id": d.get("device_id"),
                            "scheme": d.get("scheme"), "file": kp})
        except (ValueError, AttributeError):
            devices.append({"file": kp, "error": "unreadable"})
    raw = dict(m.raw)
    return {
        "kind": "bundle",
        "path": str(Path(path)),
        "archive": files.archive,
        "verified": verified,
        **{k: raw.get(k) for k in ("bundle_id", "family", "release", "version", "created",
                                  "expires", "format", "backend", "hardware_ids", "target", "io",
                                  "preprocess", "labels", "metrics", "provenance")},
        "model_file": m.model_payload.name,
        "size_bytes": sum(p.size for p in m.payloads if p.role != "extra"),
        "files": {p: {"bytes": len(b), "sha256_signed": signed.get(p)} for p, b in
                  sorted(files.files.items())},
        "devices": devices,
        "manifest": raw,
    }
