"""Device recipients: wrapping a bundle's data key for a device, and adding a device to an
existing bundle without re-encrypting or re-signing it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed_runtime.sdk import (
    KEYS_DIR,
    WRAPPED_KEY_KIND,
    atomic_write_bytes,
    canonical_json,
    check_commitment,
    fingerprint,
    load_private_key,
    load_public_key,
    pack_archive,
    read_bundle,
    unwrap_data_key,
    verify_bundle,
    wrap_data_key,
    wrapped_key_entry,
)

from ..errors import InvalidInputError

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class Recipient:
    """A device allowed to decrypt: a readable id and its public key (X25519, P-256 or RSA)."""

    device_id: str
    public_key: Any

    def __post_init__(self) -> None:
        if not _DEVICE_ID.match(self.device_id):
            raise InvalidInputError("invalid device id", expected="letters, digits, . _ : - (max 128)",
                                    found=repr(self.device_id)[:100], code="bad-device-id")

    @classmethod
    def load(cls, spec: str | os.PathLike[str], device_id: str | None = None) -> "Recipient":
        """From ``path.pub`` or ``"device-id=path.pub"`` (the id defaults to the file stem)."""
        s = os.fspath(spec)
        if device_id is None and "=" in s and not Path(s).exists():
            device_id, s = s.split("=", 1)
        p = Path(s)
        return cls(device_id or p.stem, load_public_key(p, what="device public key"))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def wrapped_key_file(data_key: bytes, bundle_id: str, r: Recipient) -> tuple[str, bytes]:
    """``(keys/<fingerprint>.json, its bytes)`` holding ``data_key`` wrapped for ``r``."""
    fp = r.fingerprint
    scheme, wrapped = wrap_data_key(data_key, r.public_key, bytes.fromhex(bundle_id), fp)
    doc = {"kind": WRAPPED_KEY_KIND, "version": 1, "bundle_id": bundle_id, "recipient": fp,
           "device_id": r.device_id, "scheme": scheme, "wrapped": wrapped}
    return f"{KEYS_DIR}/{fp}.json", canonical_json(doc)


def add_device(
    bundle: str | os.PathLike[str],
    device: Recipient,
    *,
    unwrap_key: Any,
    unwrap_key_password: str | None = None,
    trust: Any,
) -> str:
    """Wrap the bundle's data key for one more device; return the new ``keys/`` entry's path.

    The data key is recovered with ``unwrap_key``: the private key of a device (or escrow key)
    the bundle is already wrapped for. bundle.json, the payloads and model.sig are untouched;
    a directory gets one new file, an archive is rewritten atomically.

    Raises:
        BundleError / IntegrityError: the bundle does not verify with ``trust``, the unwrap key
            has no entry (``no-device-key``), or the recovered key fails the commitment.
    """
    vb = verify_bundle(bundle, trust=trust, require_hardware=False, check_expiry=False)
    priv = load_private_key(unwrap_key, password=unwrap_key_password, what="unwrap private key")
    recipient = fingerprint(priv.public_key())
    w = wrapped_key_entry(vb, recipient)
    m = vb.manifest
    dk = unwrap_data_key(w["scheme"], w["wrapped"], priv, m.bundle_id_bytes, recipient)
    check_commitment(dk, m.bundle_id_bytes, m.key_commitment)
    rel, data = wrapped_key_file(dk, m.bundle_id, device)
    p = Path(bundle)
    if vb.files.archive:
        # re-read so a concurrent add-device is not lost, then replace atomically
        files = read_bundle(p).all_files()
        files[rel] = data
        atomic_write_bytes(p, pack_archive(files))
        os.chmod(p, 0o644)
    else:
        atomic_write_bytes(p / rel, data)
        os.chmod(p / rel, 0o644)
    return rel


def write_bundle_dir(out: Path, files: dict[str, bytes], *, overwrite: bool) -> None:
    """Assemble ``files`` in a temporary sibling folder, fsync, and rename it to ``out``."""
    if out.exists() and not overwrite:
        raise InvalidInputError("output already exists", found=str(out),
                                fix="pick another --out or pass --overwrite", code="exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        for rel, data in sorted(files.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old.{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

