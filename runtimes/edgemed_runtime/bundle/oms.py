"""OpenSSF Model Signing (OMS) signatures, as written by ``model_signing sign key`` (v1.x):
a Sigstore bundle (media type v0.3) holding a DSSE envelope over an in-toto Statement v1 whose
predicate (``https://model_signing/signature/v1.0``) lists the SHA-256 of every signed file.

This module verifies such a signature against a pinned ECDSA P-256 publisher key with pyca
``cryptography`` only (the ``model_signing`` package is not needed on devices), and builds the
unsigned statement / envelope for the SDK's signer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import IntegrityError
from .format import KEYS_DIR, OMS_IGNORE_PATHS, SIGNATURE_FILE, check_relpath
from .keys import check_publisher_key, publisher_hint

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def root_digest(resources: list[tuple[str, str]]) -> str:
    """OMS subject digest: SHA-256 over the raw digests of the resources in listed order."""
    h = hashlib.sha256()
    for _, digest in resources:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def build_statement(model_name: str, digests: Mapping[str, str]) -> dict[str, Any]:
    """The in-toto statement an OMS signer signs, for ``{relative path: sha256 hex}``."""
    res = sorted(digests.items())
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root_digest(res)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": sorted(OMS_IGNORE_PATHS)},
            "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in res],
        },
    }


def build_signature(statement_bytes: bytes, der_signature: bytes, hint: str) -> dict[str, Any]:
    """The Sigstore bundle (``model.sig`` JSON) around a DSSE signature of ``statement_bytes``."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(statement_bytes).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(der_signature).decode(), "keyid": ""}],
        },
    }


@dataclass(frozen=True)
class SignedStatement:
    """What a verified ``model.sig`` vouches for: ``{path: sha256 hex}`` of the signed files."""

    model_name: str
    resources: Mapping[str, str]
    ignore_paths: tuple[str, ...]


def _fmt(msg: str, found: Any = None) -> IntegrityError:
    return IntegrityError(f"model.sig is malformed: {msg}", found=None if found is None else
                          repr(found)[:200], expected="an OMS Sigstore bundle written by "
                          "edgemed bundle or model_signing sign key", code="bad-signature-format")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _fmt(f"{what} is not base64 text", type(value).__name__)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fmt(f"{what} is not valid base64") from None


def verify_signature(sig_bytes: bytes, trust: Any) -> SignedStatement:
    """Verify ``model.sig`` with the pinned publisher public key; return the signed file list.

    Raises:
        BundleError(code="unsupported-publisher-key"): ``trust`` is not ECDSA P-256.
        IntegrityError: ``bad-signature-format``, ``wrong-publisher`` (signed by another key),
            ``signature-invalid``, ``statement-invalid``, ``unsafe-path``.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    check_publisher_key(trust)
    try:
        doc = json.loads(sig_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _fmt("not JSON") from None
    if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise _fmt("unknown Sigstore bundle media type",
                   doc.get("mediaType") if isinstance(doc, dict) else doc)
    vm = doc.get("verificationMaterial")
    hint = vm.get("publicKey", {}).get("hint") if isinstance(vm, dict) and isinstance(
        vm.get("publicKey"), dict) else None
    if hint is not None and hint != publisher_hint(trust):
        raise IntegrityError(
            "bundle is signed by a different publisher key", expected=publisher_hint(trust)[:16],
            found=str(hint)[:16], fix="pin the right publisher key, or get the bundle from "
            "its real publisher", code="wrong-publisher",
        )
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise _fmt("no in-toto DSSE envelope")
    payload = _b64(env.get("payload"), "payload")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= 4 or not all(isinstance(s, dict) for s in sigs):
        raise _fmt("envelope must hold 1 to 4 signatures")
    message = pae(payload)
    for s in sigs:
        try:
            trust.verify(_b64(s.get("sig"), "signature"), message, ec.ECDSA(hashes.SHA256()))
            break
        except InvalidSignature:
            continue
    else:
        raise IntegrityError(
            "bundle signature does not verify with the pinned publisher key",
            fix="the signed statement or signature was modified, or another key signed it",
            code="signature-invalid",
        )
    return _parse_statement(payload)


def _bad(msg: str, found: Any = None) -> IntegrityError:
    return IntegrityError(f"signed statement is invalid: {msg}",
                          found=None if found is None else repr(found)[:200],
                          code="statement-invalid")


def _parse_statement(payload: bytes) -> SignedStatement:
    try:
        st = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _bad("not JSON") from None
    if not isinstance(st, dict) or st.get("_type") != STATEMENT_TYPE:
        raise _bad("not an in-toto v1 statement")
    if st.get("predicateType") != PREDICATE_TYPE:
        raise _bad("unknown predicate type", st.get("predicateType"))
    subj = st.get("subject")
    if not isinstance(subj, list) or len(subj) != 1 or not isinstance(subj[0], dict):
        raise _bad("exactly one subject expected")
    pred = st.get("predicate")
    if not isinstance(pred, dict):
        raise _bad("no predicate")
    ser = pred.get("serialization")
    if not isinstance(ser, dict) or ser.get("method") != "files" or ser.get("hash_type") != "sha256" \
            or ser.get("allow_symlinks") is not False:
        raise _bad("serialization must be files / sha256 / no symlinks", ser)
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not set(ignore) <= set(OMS_IGNORE_PATHS):
        raise _bad("unexpected ignore_paths", ignore)
    res = pred.get("resources")
    if not isinstance(res, list) or not res:
        raise _bad("no resources")
    pairs: list[tuple[str, str]] = []
    for r in res:
        if not isinstance(r, dict) or r.get("algorithm") != "sha256" or not isinstance(
                r.get("digest"), str) or not _HEX64.match(r["digest"]):
            raise _bad("resources must be sha256 digests", r)
        name = check_relpath(r.get("name"), what="signed file name")
        if name == SIGNATURE_FILE or name.startswith(KEYS_DIR + "/"):
            raise _bad("signature or keys/ listed as a signed file", name)
        pairs.append((name, r["digest"]))
    if len({n for n, _ in pairs}) != len(pairs):
        raise _bad("a file is listed twice")
    digest = subj[0].get("digest", {}).get("sha256") if isinstance(subj[0].get("digest"), dict) else None
    if digest != root_digest(pairs):
        raise _bad("subject digest does not match the resources", digest)
    return SignedStatement(str(subj[0].get("name", "")), dict(pairs), tuple(ignore))


def check_files(statement: SignedStatement, files: Mapping[str, bytes], *,
                defer: frozenset[str] = frozenset()) -> None:
    """Check that ``files`` are exactly the signed files with the signed SHA-256 digests.

    ``defer`` names files whose digests the caller checks later with ``check_digest`` (the
    loader hashes large payloads on a second thread while it decrypts them).

    Raises:
        IntegrityError: ``unsigned-file``, ``missing-file`` or ``hash-mismatch``.
    """
    extra = sorted(set(files) - set(statement.resources))
    if extra:
        raise IntegrityError("bundle holds a file the signature does not cover",
                             found=", ".join(extra)[:200], fix="remove it or re-seal",
                             code="unsigned-file")
    missing = sorted(set(statement.resources) - set(files))
    if missing:
        raise IntegrityError("a signed file is missing from the bundle",
                             found=", ".join(missing)[:200], code="missing-file")
    for name in sorted(set(files) - defer):
        check_digest(statement, name, files[name])


def check_digest(statement: SignedStatement, name: str, data: Any) -> None:
    """Raise IntegrityError(code="hash-mismatch") unless ``data`` (bytes, or a container.FileRef,
    hashed as it streams) has the signed digest of ``name``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        digest = hashlib.sha256(data).hexdigest()
    else:
        h = hashlib.sha256()
        with open(data.path, "rb") as f:
            f.seek(data.offset)
            left = data.size
            while left > 0 and (block := f.read(min(left, 1 << 20))):
                h.update(block)
                left -= len(block)
        digest = h.hexdigest()
    if digest != statement.resources.get(name):
        raise IntegrityError("a bundle file does not match its signed SHA-256",
                             found=name, fix="the bundle was modified; get a fresh copy",
                             code="hash-mismatch")
