"""The bundle format: names, limits, path rules and the parsed ``bundle.json`` (see
docs/bundle-format.md). Pure Python; no crypto here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from ..errors import BundleError, IntegrityError

FORMAT_VERSION = 1
MANIFEST_FILE = "bundle.json"
SIGNATURE_FILE = "model.sig"
KEYS_DIR = "keys"
PAYLOAD_DIR = "payload"
ARCHIVE_SUFFIX = ".edgemed"
MANIFEST_KIND = "edgemed-bundle"
WRAPPED_KEY_KIND = "edgemed-wrapped-key"
STREAM_SCHEME = "edgemed-stream-v1"

# Size limits, checked before anything is parsed or allocated.
MAX_MANIFEST_BYTES = 1 << 20  # bundle.json
MAX_SIGNATURE_BYTES = 1 << 20  # model.sig
MAX_KEY_FILE_BYTES = 64 << 10  # one keys/*.json
MAX_KEY_FILES = 4096
MAX_PAYLOAD_BYTES = 8 << 30  # one payload's declared plaintext length
MAX_FILES = 64  # signed files (bundle.json + payloads)
MIN_CHUNK, MAX_CHUNK = 4 << 10, 16 << 20
DEFAULT_CHUNK = 1 << 20
# Payload compression (applied before encryption; docs/bundle-format.md "Compression").
COMPRESSIONS = ("none", "zlib")

# OMS: the reference verifier ignores these paths; keys/ is added after signing.
OMS_IGNORE_PATHS = (".git", ".gitattributes", ".github", ".gitignore", KEYS_DIR, SIGNATURE_FILE)

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")


def check_relpath(path: str, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a bundle.

    Rules: 1-3 segments separated by ``/``; each segment matches ``[A-Za-z0-9][A-Za-z0-9._-]*``
    (so no ``..``, no leading dot, no absolute path, no backslash, no NUL, no drive letter).

    Raises:
        IntegrityError(code="unsafe-path"): anything else.
    """
    bad = (
        not isinstance(path, str) or not path or len(path) > 255 or "\\" in path
        or "\x00" in path or path.startswith("/") or path.count("/") > 2
        or not all(_SEGMENT.match(s) and s not in (".", "..") for s in path.split("/"))
    )
    if bad:
        raise IntegrityError(
            f"unsafe {what} in bundle", expected="a relative path like payload/model.onnx.enc "
            "(letters, digits, . _ -; no '..', '/', '\\' or NUL at the start)",
            found=repr(path)[:200], fix="re-seal the bundle with edgemed bundle",
            code="unsafe-path",
        )
    return path


def check_family(name: str) -> str:
    """Return ``name`` if it is a valid model family name, else raise BundleError."""
    if not isinstance(name, str) or not _FAMILY.match(name):
        raise BundleError(
            "invalid model family name", expected="lowercase letters, digits, . _ - (max 64)",
            found=repr(name)[:100], fix="pick a family like chest-xray", code="bad-family",
        )
    return name


def parse_time(value: str, *, what: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp ``YYYY-MM-DDTHH:MM:SSZ``."""
    try:
        if not isinstance(value, str) or not value.endswith("Z"):
            raise ValueError(value)
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise IntegrityError(
            f"bad {what} timestamp in bundle.json", expected="YYYY-MM-DDTHH:MM:SSZ",
            found=repr(value)[:80], code="manifest-invalid",
        ) from None


def format_time(t: datetime) -> str:
    """Format a datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_version(v: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; non-numeric suffixes are dropped (``"0.1.0rc1"`` -> 0.1.0)."""
    out = []
    for part in str(v).split(".")[:3]:
        m = re.match(r"\d+", part)
        out.append(int(m.group()) if m else 0)
    return tuple(out)


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` the way edgemed writes its JSON files (sorted keys, 2-space indent)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


@dataclass(frozen=True)
class PayloadEntry:
    """One encrypted file.

    Attributes:
        path: its path in the bundle (``payload/<name>.enc``).
        name: the plaintext file name it decrypts to (only in memory).
        role: ``"model"`` (the file the backend loads), ``"weights"`` (the model's large
            tensors, see weights.py; onnxruntime only) or ``"extra"``.
        plaintext_length: bytes under encryption, i.e. after decryption (the *stored* bytes:
            the compressed stream when ``compression`` is not ``"none"``); bound by the AAD.
        chunk_size: plaintext bytes per chunk (the last chunk may be shorter or empty).
        ciphertext_length: exact size of the encrypted file.
        compression: ``"none"`` (absent in bundle.json: same) or ``"zlib"`` (RFC 1950 stream,
            decompressed after decryption).
        uncompressed_length: with compression, the exact size after decompression (signed;
            a device refuses any other size); None without compression.
    """

    path: str
    name: str
    role: str
    plaintext_length: int
    chunk_size: int
    compression: str = "none"
    uncompressed_length: int | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS or \
                (self.compression == "none") != (self.uncompressed_length is None):
            raise IntegrityError("payload compression fields are inconsistent",
                                 expected="compression none without uncompressed_length, or "
                                 "zlib with it",
                                 found=f"{self.compression!r}, {self.uncompressed_length!r}",
                                 code="manifest-invalid")

    @property
    def size(self) -> int:
        """Bytes the payload finally decodes to (after decryption and decompression)."""
        return self.plaintext_length if self.uncompressed_length is None else self.uncompressed_length

    @property
    def chunks(self) -> int:
        """Number of chunks (at least one: an empty file is one empty final chunk)."""
        return max(1, -(-self.plaintext_length // self.chunk_size))

    @property
    def ciphertext_length(self) -> int:
        return self.plaintext_length + 16 * self.chunks

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "name": self.name, "role": self.role,
                             "plaintext_length": self.plaintext_length,
                             "chunk_size": self.chunk_size,
                             "ciphertext_length": self.ciphertext_length,
                             "compression": self.compression}
        if self.uncompressed_length is not None:
            d["uncompressed_length"] = self.uncompressed_length
        return d


@dataclass(frozen=True)
class BundleManifest:
    """``bundle.json``, parsed and checked. ``raw`` is the full JSON object (for inspect/diff)."""

    bundle_id: str
    family: str
    release: int
    version: str
    created: str
    expires: str
    min_runtime_version: str
    target: Mapping[str, Any]
    backend: str
    backend_options: Mapping[str, Any]
    artifact_format: str
    hardware_ids: tuple[str, ...]
    key_commitment: str
    payloads: tuple[PayloadEntry, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def bundle_id_bytes(self) -> bytes:
        return bytes.fromhex(self.bundle_id)

    @property
    def model_payload(self) -> PayloadEntry:
        return next(p for p in self.payloads if p.role == "model")

    @property
    def weights_payload(self) -> PayloadEntry | None:
        return next((p for p in self.payloads if p.role == "weights"), None)

    @property
    def expires_at(self) -> datetime:
        return parse_time(self.expires, what="expires")


def _bad(msg: str, found: Any, expected: str | None = None) -> IntegrityError:
    return IntegrityError(
        f"bundle.json is invalid: {msg}", expected=expected, found=repr(found)[:200],
        fix="re-seal the bundle with edgemed bundle", code="manifest-invalid",
    )


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{key} must be an integer in [{lo}, {hi}]", v)
    return v


def _str(d: Mapping[str, Any], key: str, max_len: int = 256) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise _bad(f"{key} must be a non-empty string", v)
    return v


def parse_manifest(data: bytes) -> BundleManifest:
    """Parse and check ``bundle.json`` bytes (its signature was verified before).

    Raises:
        IntegrityError: oversized, not JSON, wrong kind, missing/invalid fields, unsafe paths
            (codes ``oversized``, ``manifest-invalid``, ``unsafe-path``).
        BundleError(code="format-version"): a format version this runtime does not read.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError("bundle.json is too large", expected=f"<= {MAX_MANIFEST_BYTES} bytes",
                             found=f"{len(data)} bytes", code="oversized")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad("not JSON", type(exc).__name__) from None
    if not isinstance(d, dict) or d.get("kind") != MANIFEST_KIND:
        raise _bad("not an edgemed bundle manifest", d.get("kind") if isinstance(d, dict) else d,
                   expected=f'"kind": "{MANIFEST_KIND}"')
    fv = d.get("format_version")
    if fv != FORMAT_VERSION:
        raise BundleError(
            "unsupported bundle format version", expected=str(FORMAT_VERSION), found=repr(fv),
            fix="upgrade edgemed_runtime, or re-seal with a matching edgemed", code="format-version",
        )
    bid = _str(d, "bundle_id", 32)
    if len(bid) != 32 or not _HEX.match(bid):
        raise _bad("bundle_id must be 32 lowercase hex digits", bid)
    enc = d.get("encryption")
    if not isinstance(enc, dict) or enc.get("scheme") != STREAM_SCHEME:
        raise _bad("unknown encryption scheme", enc, expected=STREAM_SCHEME)
    commit = enc.get("key_commitment")
    if not isinstance(commit, str) or len(commit) != 64 or not _HEX.match(commit):
        raise _bad("key_commitment must be 64 hex digits", commit)
    plist = d.get("payloads")
    if not isinstance(plist, list) or not 1 <= len(plist) <= MAX_FILES - 1:
        raise _bad("payloads must be a non-empty list", type(plist).__name__)
    payloads = []
    for p in plist:
        if not isinstance(p, dict):
            raise _bad("payload entries must be objects", p)
        path = check_relpath(_str(p, "path", 255), what="payload path")
        if not path.startswith(PAYLOAD_DIR + "/"):
            raise IntegrityError("payload outside payload/", found=path, code="unsafe-path")
        codec = p.get("compression", "none")  # absent: a bundle sealed before compression
        if codec not in COMPRESSIONS:
            raise BundleError(
                "payload uses a compression this runtime does not read",
                expected=" or ".join(COMPRESSIONS), found=repr(codec)[:64],
                fix="upgrade edgemed_runtime, or re-seal with --compression none",
                code="unsupported-compression",
            )
        if codec == "none":
            if "uncompressed_length" in p:
                raise _bad("uncompressed_length given for an uncompressed payload",
                           p["uncompressed_length"])
            ulen = None
        else:
            ulen = _int(p, "uncompressed_length", 0, MAX_PAYLOAD_BYTES)
        entry = PayloadEntry(
            path=path, name=check_relpath(_str(p, "name", 128), what="payload name"),
            role=_str(p, "role", 16), plaintext_length=_int(p, "plaintext_length", 0, MAX_PAYLOAD_BYTES),
            chunk_size=_int(p, "chunk_size", MIN_CHUNK, MAX_CHUNK), compression=codec,
            uncompressed_length=ulen,
        )
        if p.get("ciphertext_length") != entry.ciphertext_length:
            raise IntegrityError(
                "declared ciphertext length does not match the plaintext length",
                expected=str(entry.ciphertext_length), found=repr(p.get("ciphertext_length")),
                code="length-mismatch",
            )
        if entry.role not in ("model", "weights", "extra"):
            raise _bad("payload role must be model, weights or extra", entry.role)
        payloads.append(entry)
    if sum(p.role == "model" for p in payloads) != 1 or sum(p.role == "weights" for p in payloads) > 1:
        raise _bad("exactly one 'model' payload and at most one 'weights' payload allowed",
                   [p.role for p in payloads])
    if len({p.path for p in payloads}) != len(payloads) or len({p.name for p in payloads}) != len(payloads):
        raise _bad("payload paths and names must be unique", [p.path for p in payloads])
    hw = d.get("hardware_ids", [])
    if not isinstance(hw, list) or not all(isinstance(h, str) and 0 < len(h) <= 128 for h in hw):
        raise _bad("hardware_ids must be a list of strings", hw)
    target = d.get("target", {})
    if not isinstance(target, dict):
        raise _bad("target must be an object", target)
    opts = d.get("backend_options", {})
    if not isinstance(opts, dict):
        raise _bad("backend_options must be an object", opts)
    for key in ("io", "preprocess"):
        if not isinstance(d.get(key), dict):
            raise _bad(f"{key} must be an object", d.get(key))
    m = BundleManifest(
        bundle_id=bid, family=_str(d, "family", 64), release=_int(d, "release", 1, (1 << 63) - 1),
        version=_str(d, "version", 64), created=_str(d, "created", 32),
        expires=_str(d, "expires", 32), min_runtime_version=_str(d, "min_runtime_version", 32),
        target=target, backend=_str(d, "backend", 64), backend_options=opts,
        artifact_format=_str(d, "format", 32), hardware_ids=tuple(hw), key_commitment=commit,
        payloads=tuple(payloads), raw=d,
    )
    try:
        check_family(m.family)
    except BundleError:
        raise _bad("invalid family", m.family) from None
    parse_time(m.created, what="created")
    m.expires_at  # noqa: B018 - validates the timestamp
    return m
