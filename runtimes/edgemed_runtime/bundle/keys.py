"""Loading publisher / device keys (PEM paths, PEM bytes or key objects) and key fingerprints."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ..errors import BundleError, InvalidInputError
from ..util import read_regular_file

KeySource = Any  # a path, PEM bytes, or a cryptography key object


MAX_PEM_BYTES = 64 << 10  # an RSA-4096 PKCS#8 PEM is ~3.3 KB


def _pem_bytes(src: KeySource, what: str) -> bytes | None:
    """The PEM bytes of a path or bytes source; None for a key object.

    Raises:
        InvalidInputError: the path is missing (``not-found``), not a regular file
            (``not-a-regular-file``: a device, FIFO or folder), unreadable, or over 64 KiB
            (``too-large``) -- see ``read_regular_file``.
    """
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        return read_regular_file(src, MAX_PEM_BYTES, what)
    return None


def load_public_key(src: KeySource, *, what: str = "public key") -> Any:
    """Load a PEM public key (SubjectPublicKeyInfo) from a path, bytes or a key object.

    Raises:
        InvalidInputError(code="bad-key"): not a PEM public key; the path errors of
            ``read_regular_file`` (``not-found``, ``not-a-regular-file``, ``too-large``).
    """
    from cryptography.hazmat.primitives import serialization

    data = _pem_bytes(src, what)
    if data is None:
        if hasattr(src, "public_bytes") and not hasattr(src, "private_bytes"):
            return src
        if hasattr(src, "public_key") and hasattr(src, "private_bytes"):
            return src.public_key()
        raise InvalidInputError(f"{what} is not a key", found=type(src).__name__, code="bad-key")
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what} is not a PEM public key", found=str(exc)[:200],
                                fix="pass the .pub file from edgemed keys generate",
                                code="bad-key") from None


def load_private_key(src: KeySource, *, password: str | bytes | None = None,
                     what: str = "private key") -> Any:
    """Load a PEM (PKCS#8) private key, optionally passphrase-protected.

    Raises:
        InvalidInputError(code="bad-key"): not a PEM private key; ``empty-passphrase``; the
            path errors of ``read_regular_file`` (``not-found``, ``not-a-regular-file``...).
        BundleError(code="bad-passphrase"): the passphrase is missing or wrong.
    """
    from cryptography.hazmat.primitives import serialization

    data = _pem_bytes(src, what)
    if data is None:
        if hasattr(src, "private_bytes"):
            return src
        raise InvalidInputError(f"{what} is not a key", found=type(src).__name__, code="bad-key")
    pw = password.encode() if isinstance(password, str) else password
    if pw is not None and not pw:
        raise InvalidInputError(f"passphrase for the {what} is empty", expected="the key's "
                                "passphrase, or none for an unprotected key", found="''",
                                fix="set the passphrase variable (--passphrase-env VAR) to the "
                                "passphrase", code="empty-passphrase")
    try:
        return serialization.load_pem_private_key(data, password=pw)
    except TypeError:
        raise BundleError(f"{what} is passphrase-protected" if pw is None else
                          f"{what} is not passphrase-protected but a passphrase was given",
                          fix="pass the passphrase (--passphrase-env VAR)" if pw is None else
                          "drop the passphrase", code="bad-passphrase") from None
    except ValueError as exc:
        msg = str(exc)
        if "password" in msg.lower() or "decrypt" in msg.lower():
            raise BundleError(f"wrong passphrase for the {what}", code="bad-passphrase") from None
        raise InvalidInputError(f"{what} is not a PEM private key", found=msg[:200],
                                fix="pass the .key file from edgemed keys generate",
                                code="bad-key") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for odd key types
        raise InvalidInputError(f"{what} cannot be loaded", found=f"{type(exc).__name__}: {exc}"[:200],
                                code="bad-key") from None


def spki_der(public_key: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_pem(public_key: Any) -> bytes:
    """PEM SubjectPublicKeyInfo of a public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key: Any) -> str:
    """Key id: the first 32 hex digits of SHA-256 over the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()[:32]


def publisher_hint(public_key: Any) -> str:
    """OMS ``verificationMaterial.publicKey.hint``: SHA-256 hex of the PEM SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_pem(public_key)).hexdigest()


def check_publisher_key(public_key: Any) -> None:
    """Raise BundleError(code="unsupported-publisher-key") unless the key is ECDSA P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if not (isinstance(public_key, ec.EllipticCurvePublicKey)
            and public_key.curve.name == "secp256r1"):
        kind = getattr(getattr(public_key, "curve", None), "name", None) or type(public_key).__name__
        raise BundleError(
            "publisher key type is not allowed", expected="an ECDSA P-256 (secp256r1) key",
            found=kind, fix="generate one with: edgemed keys generate --kind publisher",
            code="unsupported-publisher-key",
        )
