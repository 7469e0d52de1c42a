"""Publisher and device key pairs (PEM), optionally passphrase-protected.

Publisher keys sign bundles: ECDSA P-256 (what OMS verifiers accept). Device keys receive the
wrapped data key: X25519 (HPKE, default), P-256 (HPKE DHKEM P-256, for keystores without
X25519) or RSA-3072 (OAEP-SHA256).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgemed_runtime.sdk import (
    atomic_write_bytes,
    fingerprint,
    load_private_key,
    load_public_key,
    spki_pem,
)

from ..errors import InvalidInputError

KINDS = ("publisher", "device")
DEVICE_SCHEMES = ("x25519", "p256", "rsa")


@dataclass(frozen=True)
class KeyPair:
    """Paths of a generated key pair and the public key's fingerprint (its id in ``keys/``)."""

    private_path: Path
    public_path: Path
    fingerprint: str
    kind: str
    scheme: str


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write_bytes(path, data, mode=mode)


def generate_keypair(
    out_dir: str | os.PathLike[str],
    *,
    kind: str = "device",
    name: str | None = None,
    scheme: str = "x25519",
    passphrase: str | None = None,
    overwrite: bool = False,
) -> KeyPair:
    """Generate a key pair as ``<out_dir>/<name>.key`` (PKCS#8, mode 0600) and ``<name>.pub``.

    Args:
        kind: ``publisher`` (ECDSA P-256; ``scheme`` ignored) or ``device``.
        name: file stem (default: the kind).
        scheme: device key type: ``x25519``, ``p256`` or ``rsa`` (3072 bits).
        passphrase: encrypt the private key with it (PKCS#8 + scrypt/AES via BestAvailable).
        overwrite: replace existing files (refused by default).
    Raises:
        InvalidInputError: unknown kind/scheme, the files exist, or an empty passphrase
            (``empty-passphrase``: it would silently leave the key unencrypted).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

    if passphrase is not None and not passphrase:
        raise InvalidInputError("passphrase is empty", expected="a non-empty passphrase or None",
                                found="''", fix="pass a passphrase, or None for an unprotected "
                                "key", code="empty-passphrase")
    if kind not in KINDS:
        raise InvalidInputError("unknown key kind", expected=", ".join(KINDS), found=kind,
                                code="bad-key-kind")
    if kind == "publisher":
        scheme = "p256"
        key = ec.generate_private_key(ec.SECP256R1())
    elif scheme == "x25519":
        key = x25519.X25519PrivateKey.generate()
    elif scheme == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif scheme == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise InvalidInputError("unknown device key scheme", expected=", ".join(DEVICE_SCHEMES),
                                found=scheme, code="bad-key-kind")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or kind
    priv, pub = out / f"{stem}.key", out / f"{stem}.pub"
    if not overwrite and (priv.exists() or pub.exists()):
        raise InvalidInputError("key files already exist", found=f"{priv} / {pub}",
                                fix="pick another --name or pass --overwrite",
                                code="exists")
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase is not None
           else serialization.NoEncryption())
    _write(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   enc), 0o600)
    _write(pub, spki_pem(key.public_key()), 0o644)
    return KeyPair(priv, pub, fingerprint(key.public_key()), kind, scheme)


__all__ = ["DEVICE_SCHEMES", "KINDS", "KeyPair", "fingerprint", "generate_keypair",
           "load_private_key", "load_public_key"]
