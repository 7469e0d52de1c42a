"""Verify, inspect and open bundles on a device.

Order (docs/bundle-format.md, "Loading"): read files (limits, names, no links) -> OMS signature
with the pinned publisher key -> every signed SHA-256 -> bundle.json (schema) -> format version,
runtime version, creation time, expiry, hardware id, target -> release counter vs the device's
state -> unwrap the data key -> key commitment -> per payload: read it once into memory, check its
signed SHA-256 (on a second thread, overlapping only its own AES-GCM decryption) -> inflate ->
backend session from bytes -> smoke inference -> persist the accepted release.

Hash before parse: all devices share one data key, so AES-GCM alone does not stop a holder of
any device key from re-encrypting modified bytes; no parser (zlib, the weights index,
onnxruntime, OpenVINO...) sees a payload before its signed digest matched. Nothing decrypted is
ever written to disk. Each call builds its own verifier state.
"""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._memory import wipe, zero
from ..errors import (
    BundleError,
    DeviceMismatchError,
    EdgemedError,
    ExpiredError,
    IntegrityError,
    InvalidInputError,
)
from ..session import Session
from .compress import decompress_payload
from .container import BundleFiles, FileRef, read_bundle
from .crypto import (
    WRAP_SCHEMES,
    check_commitment,
    decrypt_stream,
    scheme_for,
    unwrap_data_key,
)
from .format import (
    CLOCK_SKEW,
    KEYS_DIR,
    MANIFEST_FILE,
    WRAPPED_KEY_KIND,
    BundleManifest,
    PayloadEntry,
    format_time,
    parse_manifest,
    task_and_inference,
    parse_version,
)
from .keys import check_publisher_key, fingerprint, load_private_key, load_public_key
from .oms import SignedStatement, check_digest, check_files, verify_signature
from .requirements import check_requirements, requirements_of
from .state import RollbackState
from .weights import open_with_weights


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
    # payloads whose SHA-256 is still to be checked (by decrypt_payloads, before any parser)
    pending: frozenset[str] = frozenset()


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
        check_expiry: refuse an expired bundle, or one created more than CLOCK_SKEW (1 day)
            after ``now`` (``inspect`` passes False).
        defer_payload_hashes: leave the payloads on disk and their SHA-256 checks to
            ``decrypt_payloads``, which reads each payload once and checks its digest before
            anything parses it. Everything else is checked here.
    Returns:
        a VerifiedBundle.
    Raises:
        IntegrityError / BundleError / ExpiredError / DeviceMismatchError with specific codes
        (``not-yet-valid``: created in the future, beyond the clock skew).
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
                           found=format_time(t),
                           fix="install a newer bundle from the publisher", code="expired")
    if check_expiry and m.created_at > t + CLOCK_SKEW:
        raise BundleError(
            "bundle was created in the future", expected=f"created before {format_time(t + CLOCK_SKEW)} "
            f"(now + {CLOCK_SKEW.days} day of clock skew)", found=f"created {m.created}",
            fix="check this device's clock (UTC); if it is right, the publisher's clock was "
            "wrong: ask for a re-sealed bundle", code="not-yet-valid",
        )
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
    rel = f"{KEYS_DIR}/{recipient}.json"
    readd = ("re-add this device with: edgemed keys add-device BUNDLE --device DEVICE.pub "
             "--unwrap-key KEY --trust PUBLISHER.pub")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        d = None
    if not isinstance(d, dict) or d.get("kind") != WRAPPED_KEY_KIND or d.get("version") != 1 \
            or not isinstance(d.get("scheme"), str) or not isinstance(d.get("wrapped"), str):
        raise IntegrityError("this device's wrapped key file is corrupted or unreadable",
                             expected=f'JSON with "kind": "{WRAPPED_KEY_KIND}", "version": 1, '
                             '"scheme", "wrapped"', found=rel, fix=readd,
                             code="wrapped-key-invalid")
    if d["scheme"] not in WRAP_SCHEMES:
        raise IntegrityError("this device's wrapped key file is corrupted: unknown wrap scheme",
                             expected=", ".join(WRAP_SCHEMES), found=repr(d["scheme"])[:64],
                             fix=readd, code="wrapped-key-invalid")
    if d.get("bundle_id") != vb.manifest.bundle_id or d.get("recipient") != recipient:
        raise IntegrityError("wrapped key file belongs to another bundle or device",
                             expected=f"bundle {vb.manifest.bundle_id}, device {recipient}",
                             found=f"bundle {d.get('bundle_id')}, device {d.get('recipient')}"[:200],
                             fix=readd, code="wrapped-key-invalid")
    return d


def decrypt_payloads(vb: VerifiedBundle, device_key: Any, *,
                     password: str | bytes | None = None) -> dict[str, Any]:
    """Unwrap the data key with the device key, check the commitment, decrypt every payload.

    Each payload still pending on ``vb`` is read once into memory and its signed SHA-256 is
    checked (on a second thread, overlapping its AES-GCM decryption) before it is inflated or
    returned: no parser ever sees bytes whose digest does not match.

    Returns:
        ``{plaintext name: buffer}`` (bytearray or uint8 array; in memory only, wipe it after use).
    Raises:
        IntegrityError: ``hash-mismatch`` (reported in preference to any other failure of the
            same payload), ``decrypt-failed``, ``length-mismatch``, ``unwrap-failed``,
            ``key-commitment``, ``wrapped-key-invalid``, ``decompress*``, container codes.
        DeviceMismatchError / BundleError: no key for this device, unsupported key.
    """
    priv = load_private_key(device_key, password=password, what="device private key")
    scheme_for(priv.public_key())  # refuse unsupported device key types up front
    recipient = fingerprint(priv.public_key())
    w = wrapped_key_entry(vb, recipient)
    m = vb.manifest
    dk = unwrap_data_key(w["scheme"], w["wrapped"], priv, m.bundle_id_bytes, recipient)
    check_commitment(dk, m.bundle_id_bytes, m.key_commitment)
    out: dict[str, Any] = {}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgemed-sha256") \
        if vb.pending else None
    try:
        for p in m.payloads:
            out[p.name] = _payload(vb, p, dk, pool)
    except BaseException:
        wipe(out)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return out


def _payload(vb: VerifiedBundle, p: PayloadEntry, dk: bytes,
             pool: ThreadPoolExecutor | None) -> Any:
    """One payload's plaintext: read once, its digest checked (if pending: on ``pool`` while
    it decrypts, or here first without one) before it is inflated or returned."""
    m = vb.manifest
    src = vb.files.files[p.path]
    digest: Future[None] | None = None
    if p.path in vb.pending:
        if isinstance(src, FileRef):
            src = src.load()
        if pool is None:
            check_digest(vb.statement, p.path, src)
        else:
            digest = pool.submit(check_digest, vb.statement, p.path, src)
    elif isinstance(src, FileRef):
        raise IntegrityError("payload was not scheduled for verification", found=p.path,
                             code="hash-mismatch")
    try:
        plain = decrypt_stream(dk, m.bundle_id_bytes, p, m.release, src)
    except BaseException:
        if digest is not None:
            digest.result()  # a digest mismatch explains the failure better
        raise
    try:
        if digest is not None:
            digest.result()
    except BaseException:
        zero(plain)
        raise
    if p.compression == "none":
        return plain
    try:  # verified and authenticated; inflate with a hard cap at the signed size
        return decompress_payload(p, plain)
    finally:
        zero(plain)


def _smoke(sess: Session) -> None:
    io = sess.io
    try:
        x = np.zeros(io.input_shape, dtype=np.dtype(io.input_dtype))
    except MemoryError:
        raise BundleError("the smoke inference input does not fit in memory",
                          found="x".join(map(str, io.input_shape)),
                          fix="free memory, or use a bundle with a smaller io.input_shape",
                          code="smoke-failed") from None
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
    """Open an already verified bundle (see ``open_bundle``): release counter, decryption
    (``decrypt_payloads``: digests before any parser), backend session, smoke inference, then
    (``persist``) record the release.

    Raises:
        the errors of ``open_bundle``.
    """
    from ..backends import get_backend

    m = vb.manifest
    state.check(m)
    io, pre = m.io, m.preprocess
    name = backend or m.backend
    if backend is None:  # what the device must install, named before anything is decrypted
        check_requirements(requirements_of(m))
    be = get_backend(name)
    if m.artifact_format not in be.formats:
        raise InvalidInputError(f"backend {name!r} cannot run {m.artifact_format!r} models",
                                expected=", ".join(be.formats), found=m.artifact_format,
                                code="backend-format")
    weights = m.weights_payload
    if weights is not None and not be.accepts_external_weights:
        raise InvalidInputError(f"backend {name!r} cannot load split weights",
                                expected="a backend that takes external weights "
                                "(accepts_external_weights, e.g. onnxruntime)",
                                found=name, fix="re-seal with split_weights=False",
                                code="backend-format")
    # every payload's digest is checked before anything below parses it
    plain = decrypt_payloads(vb, device_key, password=device_key_password)
    model_name = m.model_payload.name
    opts = {**dict(m.backend_options), **dict(options or {})}
    if weights is not None:
        # the backend reads the decrypted tensors in place; they are wiped when it closes
        graph_buf, weight_buf = plain.pop(model_name), plain.pop(weights.name)
        wipe(plain)
        bs = open_with_weights(be, graph_buf, weight_buf, io, opts)
    else:
        try:
            extras = {k: bytes(v) for k, v in plain.items() if k != model_name}
            if extras:
                opts["extra_files"] = extras
            bs = be.open(bytes(plain[model_name]), io, opts)
        finally:
            wipe(plain)
    task, inference = task_and_inference(m.raw)
    sess = Session(bs, io, pre, name, info={
        "format": m.artifact_format, "bundle_id": m.bundle_id, "family": m.family,
        "release": m.release, "version": m.version, "path": str(vb.files.source),
        "target": dict(m.target),
    }, task=task, inference=inference)
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
        except (ValueError, AttributeError, RecursionError):
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
