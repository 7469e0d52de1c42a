"""Sealing an artifact into a bundle: encrypt its files under a fresh data key, write the
signed ``bundle.json``, sign with OMS, wrap the data key for each device."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from edgemed_runtime import Artifact
from edgemed_runtime.sdk import (
    ARCHIVE_SUFFIX,
    DEFAULT_CHUNK,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MANIFEST_KIND,
    MAX_CHUNK,
    MIN_CHUNK,
    PAYLOAD_DIR,
    SIGNATURE_FILE,
    STREAM_SCHEME,
    PayloadEntry,
    atomic_write_bytes,
    backend_class,
    backend_names,
    canonical_json,
    check_family,
    check_relpath,
    compress_payload,
    encrypt_stream,
    format_time,
    key_commitment,
    load_private_key,
    new_data_key,
    pack_archive,
    requirements_for,
    runtime_version,
)

from ..errors import InvalidInputError
from .devices import Recipient, wrapped_key_file, write_bundle_dir
from .signing import sign_files


COMPRESSION_MODES = ("auto", "zlib", "none")
AUTO_MIN_SAVING = 0.20  # "auto" compresses a payload only when zlib saves at least this much


def _maybe_compress(plain: bytes, mode: str) -> tuple[bytes, str]:
    """``(stored bytes, codec)`` for one payload under the SealOptions ``compression`` mode."""
    if mode == "none":
        return plain, "none"
    packed = compress_payload(plain)
    if mode == "zlib" or len(packed) <= (1 - AUTO_MIN_SAVING) * len(plain):
        return packed, "zlib"
    return plain, "none"


@dataclass(frozen=True)
class SealOptions:
    """What goes into bundle.json besides the artifact.

    Attributes:
        family: model family (lowercase, digits, . _ -); rollback is tracked per family.
        release: monotonic release counter (>= 1); devices refuse lower ones.
        version: human version string (default ``str(release)``).
        expires: expiry time (default: 365 days after ``created``).
        hardware_ids: device hardware ids allowed (empty: any).
        min_runtime_version: oldest edgemed_runtime that may open it.
        chunk_size: plaintext bytes per AES-GCM chunk.
        split_weights: store an ONNX model as a small graph plus a ``weights`` payload that
            the backend reads in place (faster, less memory on devices). None (auto): when
            the backend accepts external weights (``Backend.accepts_external_weights``:
            onnxruntime), the format onnx/onnx-qdq and the model >= 1 MiB.
        compression: per payload, before encryption: ``"auto"`` (zlib level 9 only where it
            saves at least 20%, e.g. pruned or weight-shared models; dense ones stay stored
            as is and keep the zero-copy load), ``"zlib"`` (always) or ``"none"``.
    """

    family: str
    release: int
    version: str | None = None
    expires: datetime | None = None
    hardware_ids: tuple[str, ...] = ()
    min_runtime_version: str | None = None
    chunk_size: int = DEFAULT_CHUNK
    split_weights: bool | None = None
    compression: str = "auto"

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION_MODES:
            raise InvalidInputError("unknown compression", expected=" | ".join(COMPRESSION_MODES),
                                    found=repr(self.compression)[:64], code="bad-compression")
        check_family(self.family)
        if type(self.release) is not int or not 1 <= self.release < 1 << 63:
            raise InvalidInputError("release must be an integer >= 1", found=repr(self.release),
                                    code="bad-release")
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise InvalidInputError("chunk size out of range", expected=f"{MIN_CHUNK}..{MAX_CHUNK}",
                                    found=str(self.chunk_size), code="bad-chunk-size")


def _should_split(art: Artifact, opts: SealOptions, size: int) -> bool:
    takes_weights = art.backend in backend_names() \
        and backend_class(art.backend).accepts_external_weights
    eligible = takes_weights and art.format in ("onnx", "onnx-qdq") and not art.extra_files
    if opts.split_weights is None:
        return eligible and size >= 1 << 20
    if opts.split_weights and not eligible:
        raise InvalidInputError("split weights need a single-file ONNX model for a backend "
                                "that accepts external weights (onnxruntime)",
                                found=f"{art.format} / {art.backend}", code="bad-split")
    return opts.split_weights


def build_manifest(art: Artifact, opts: SealOptions, *, bundle_id: str, created: datetime,
                   commitment: str, payloads: Iterable[PayloadEntry]) -> dict[str, Any]:
    """The bundle.json object for ``art`` (see docs/bundle-format.md)."""
    from .. import __version__

    expires = opts.expires or created + timedelta(days=365)
    if expires <= created:
        raise InvalidInputError("expiry is not after the creation time", found=format_time(expires),
                                code="bad-expiry")
    return {
        "kind": MANIFEST_KIND,
        "format_version": FORMAT_VERSION,
        "bundle_id": bundle_id,
        "family": opts.family,
        "release": opts.release,
        "version": opts.version or str(opts.release),
        "created": format_time(created),
        "expires": format_time(expires),
        "min_runtime_version": opts.min_runtime_version or runtime_version(),
        "target": dict(art.target),
        "backend": art.backend,
        "backend_options": dict(art.backend_options),
        "format": art.format,
        "hardware_ids": sorted(set(opts.hardware_ids)),
        "io": art.io.to_dict(),
        "preprocess": art.preprocess.to_dict(),
        "labels": list(art.io.labels),
        "task": art.task.to_dict(),
        **({"inference": art.inference.to_dict()} if art.inference is not None else {}),
        "metrics": dict(art.metrics),
        "provenance": [dict(r) for r in art.provenance],
        "encryption": {"scheme": STREAM_SCHEME, "aead": "AES-256-GCM", "kdf": "HKDF-SHA256",
                       "key_commitment": commitment},
        "payloads": [p.to_dict() for p in payloads],
        "producer": {"edgemed": __version__},
        **_requires(art.backend),
    }


def _requires(backend: str) -> dict[str, Any]:
    """bundle.json ``requires`` for ``backend`` (versions: this host's), or nothing for a
    backend the runtime does not know."""
    try:
        return {"requires": requirements_for(backend).to_dict()}
    except InvalidInputError:
        return {}


def seal(
    artifact: Artifact | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    publisher_key: Any,
    options: SealOptions,
    recipients: Iterable[Recipient] = (),
    publisher_key_password: str | None = None,
    archive: bool | None = None,
    overwrite: bool = False,
    created: datetime | None = None,
) -> Path:
    """Seal an artifact into a bundle at ``out`` (a directory, or a ``.edgemed`` archive).

    Args:
        artifact: an Artifact or artifact directory (any on-disk format).
        out: output path; ``archive`` defaults to ``out`` ending in ``.edgemed``.
        publisher_key: ECDSA P-256 private key (path, PEM bytes or key object).
        options: family, release, expiry... (SealOptions).
        recipients: devices to wrap the data key for (more can be added later).
    Returns:
        the bundle's path.
    Raises:
        InvalidInputError: bad artifact / options / existing output.
        BundleError: unsupported publisher or device key.
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if art.format == "torch":
        raise InvalidInputError("an in-memory torch model cannot be sealed",
                                fix="seal the output of edgemed build", code="bad-artifact")
    priv = load_private_key(publisher_key, password=publisher_key_password,
                            what="publisher private key")
    out_p = Path(out)
    as_archive = out_p.suffix == ARCHIVE_SUFFIX if archive is None else archive
    recips = list(recipients)
    if len({r.fingerprint for r in recips}) != len(recips):
        raise InvalidInputError("a device key is listed twice", code="duplicate-device")
    created = (created or datetime.now(timezone.utc)).replace(microsecond=0)
    bundle_id = secrets.token_hex(16)
    bid = bytes.fromhex(bundle_id)
    data_key = new_data_key()
    files, entries = _encrypted_payloads(art, options, data_key, bid)
    manifest = build_manifest(art, options, bundle_id=bundle_id, created=created,
                              commitment=key_commitment(data_key, bid), payloads=entries)
    files[MANIFEST_FILE] = canonical_json(manifest)
    model_name = out_p.name[: -len(ARCHIVE_SUFFIX)] if as_archive and out_p.name.endswith(
        ARCHIVE_SUFFIX) else out_p.name
    files[SIGNATURE_FILE] = sign_files({k: v for k, v in files.items()}, priv, model_name)
    for r in recips:
        rel, data = wrapped_key_file(data_key, bundle_id, r)
        files[rel] = data
    del data_key
    _write(out_p, files, as_archive=as_archive, overwrite=overwrite)
    return out_p


def _encrypted_payloads(art: Artifact, options: SealOptions, data_key: bytes,
                        bid: bytes) -> tuple[dict[str, bytes], list[PayloadEntry]]:
    """``{bundle path: encrypted bytes}`` of the artifact's files, and their payload entries;
    a large ONNX model split into graph and weights when ``options`` and the backend allow."""
    files: dict[str, bytes] = {}
    entries = []

    def add(name: str, role: str, plain: bytes) -> None:
        # compress the whole payload first, then chunk-encrypt the compressed bytes
        stored, codec = _maybe_compress(plain, options.compression)
        entry = PayloadEntry(path=f"{PAYLOAD_DIR}/{name}.enc", name=name, role=role,
                             plaintext_length=len(stored), chunk_size=options.chunk_size,
                             compression=codec,
                             uncompressed_length=None if codec == "none" else len(plain))
        files[entry.path] = encrypt_stream(data_key, bid, entry, options.release, stored)
        entries.append(entry)

    for i, name in enumerate([art.model_file, *art.extra_files]):
        src = Path(art.path) / name
        base = check_relpath(Path(name).name, what="artifact file name")
        try:
            plain = src.read_bytes()
        except OSError as exc:
            raise InvalidInputError("artifact file is missing", found=f"{src}: {exc.strerror}",
                                    fix="rebuild the artifact", code="not-found") from None
        if i == 0 and _should_split(art, options, len(plain)):
            from .external_weights import split_onnx

            graph, weights = split_onnx(plain, weights_name=f"{base}.weights")
            add(base, "model", graph)
            add(f"{base}.weights", "weights", weights)
        else:
            add(base, "model" if i == 0 else "extra", plain)
    return files, entries


def _write(out_p: Path, files: dict[str, bytes], *, as_archive: bool, overwrite: bool) -> None:
    """The bundle's files as a ``.edgemed`` archive or a folder at ``out_p``."""
    if as_archive:
        if out_p.exists() and not overwrite:
            raise InvalidInputError("output already exists", found=str(out_p),
                                    fix="pick another --out or pass --overwrite", code="exists")
        atomic_write_bytes(out_p, pack_archive(files))
        os.chmod(out_p, 0o644)
    else:
        write_bundle_dir(out_p, files, overwrite=overwrite)

