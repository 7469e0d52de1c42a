"""Bundle cryptography (pyca ``cryptography``): the chunked AES-256-GCM stream, the key
commitment, and wrapping the data key per device (HPKE X25519 / HPKE P-256 / RSA-OAEP).

Stream ``edgemed-stream-v1`` for a payload at ``path`` of bundle ``bid`` (16 bytes):
    okm        = HKDF-SHA256(ikm=data_key, salt=bid, info="edgemed/v1/payload-key" 0x00 path, L=39)
    file_key   = okm[:32];  prefix = okm[32:39]
    nonce_i    = prefix || uint32_be(i) || (0x01 if i is the last chunk else 0x00)
    aad        = "edgemed-stream-v1" 0x00 || bid || uint64_be(release) || uint64_be(plaintext_length)
                 || uint16_be(len(path)) || path
    chunk_i    = AES-256-GCM(file_key, nonce_i, plaintext[i*C:(i+1)*C], aad)  (ciphertext || tag)
Reordered, dropped, truncated, appended or spliced chunks, and payloads moved between files or
bundles, fail the tag check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from typing import Any

from .._memory import alloc, zero
from ..errors import BundleError, DeviceMismatchError, IntegrityError, MissingDependencyError
from .format import STREAM_SCHEME, PayloadEntry

DATA_KEY_BYTES = 32
TAG = 16
WRAP_SCHEMES = ("hpke-x25519-sha256-aes256gcm", "hpke-p256-sha256-aes256gcm", "rsa-oaep-sha256")


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(DATA_KEY_BYTES)


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def key_commitment(data_key: bytes, bundle_id: bytes) -> str:
    """Hex commitment to the data key: HKDF-SHA256(data_key, salt=bid, "edgemed/v1/key-commitment")."""
    return _hkdf(data_key, bundle_id, b"edgemed/v1/key-commitment", 32).hex()


def check_commitment(data_key: bytes, bundle_id: bytes, expected_hex: str) -> None:
    """Raise IntegrityError(code="key-commitment") unless ``data_key`` matches the signed commitment."""
    if not hmac.compare_digest(key_commitment(data_key, bundle_id), expected_hex):
        raise IntegrityError(
            "the data key does not match the bundle's signed key commitment",
            fix="the keys/ entry was replaced; re-add this device with edgemed keys add-device",
            code="key-commitment",
        )


def _file_key(data_key: bytes, bundle_id: bytes, path: str) -> tuple[bytes, bytes]:
    okm = _hkdf(data_key, bundle_id, b"edgemed/v1/payload-key\x00" + path.encode(), 39)
    return okm[:32], okm[32:]


def stream_aad(bundle_id: bytes, path: str, release: int, plaintext_length: int) -> bytes:
    """The associated data of every chunk of one payload."""
    p = path.encode()
    return (STREAM_SCHEME.encode() + b"\x00" + bundle_id + struct.pack(">QQH", release,
            plaintext_length, len(p)) + p)


def _nonce(prefix: bytes, i: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", i) + (b"\x01" if last else b"\x00")


def encrypt_stream(data_key: bytes, bundle_id: bytes, entry: PayloadEntry, release: int,
                   plaintext: bytes | memoryview) -> bytes:
    """Encrypt one payload (``len(plaintext)`` must equal ``entry.plaintext_length``)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(plaintext) != entry.plaintext_length:
        raise BundleError("payload length differs from its entry", code="length-mismatch")
    key, prefix = _file_key(data_key, bundle_id, entry.path)
    aead = AESGCM(key)
    aad = stream_aad(bundle_id, entry.path, release, entry.plaintext_length)
    out = bytearray(entry.ciphertext_length)
    ov, pv = memoryview(out), memoryview(plaintext)
    c, n = entry.chunk_size, entry.chunks
    for i in range(n):
        chunk = pv[i * c:(i + 1) * c]
        o = i * (c + TAG)
        aead.encrypt_into(_nonce(prefix, i, i == n - 1), chunk, aad, ov[o:o + len(chunk) + TAG])
    return bytes(out)


def decrypt_stream(data_key: bytes, bundle_id: bytes, entry: PayloadEntry, release: int,
                   ciphertext: bytes | memoryview) -> bytearray:
    """Decrypt and authenticate one payload into memory (a fresh, writable buffer: a bytearray,
    or for payloads of 1 MiB and more an uninitialised uint8 numpy array, which skips zeroing
    45 MB before overwriting it; both support the buffer protocol, ``len`` and ``bytes()``).

    Raises:
        IntegrityError: ``length-mismatch`` (size differs from the signed lengths) or
            ``decrypt-failed`` (a chunk fails authentication: tampered, reordered, dropped,
            spliced or from another payload/bundle). Nothing partial is returned.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(ciphertext) != entry.ciphertext_length:
        raise IntegrityError(
            "encrypted payload has the wrong size", expected=f"{entry.ciphertext_length} bytes",
            found=f"{entry.path}: {len(ciphertext)} bytes", code="length-mismatch",
        )
    key, prefix = _file_key(data_key, bundle_id, entry.path)
    aead = AESGCM(key)
    aad = stream_aad(bundle_id, entry.path, release, entry.plaintext_length)
    out = alloc(entry.plaintext_length)
    ov, cv = memoryview(out).cast("B"), memoryview(ciphertext)
    c, n = entry.chunk_size, entry.chunks
    for i in range(n):
        start = i * c
        length = min(c, entry.plaintext_length - start)
        o = i * (c + TAG)
        try:
            aead.decrypt_into(_nonce(prefix, i, i == n - 1), cv[o:o + length + TAG], aad,
                              ov[start:start + length])
        except InvalidTag:
            zero(ov)  # wipe what was decrypted so far
            raise IntegrityError(
                "encrypted payload failed authentication", found=f"{entry.path}: chunk {i} of {n}",
                fix="the bundle was modified; get a fresh copy from the publisher",
                code="decrypt-failed",
            ) from None
    return out


# -- wrapping the data key per device ---------------------------------------------------------
def _hpke(kem: str) -> Any:
    try:
        from cryptography.hazmat.primitives import hpke
    except ImportError:
        raise MissingDependencyError("this cryptography has no HPKE", expected="cryptography>=47",
                                     fix="pip install 'cryptography>=47'") from None
    return hpke.Suite(getattr(hpke.KEM, kem), hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def wrap_info(bundle_id: bytes, recipient: str) -> bytes:
    """HPKE ``info`` / OAEP label binding a wrapped key to one bundle and one device key."""
    return b"edgemed-bundle/v1/wrap\x00" + bundle_id + b"\x00" + recipient.encode()


def scheme_for(public_key: Any) -> str:
    """The wrap scheme for a device public key (X25519, EC P-256 or RSA >= 2048 bits).

    Raises:
        BundleError(code="unsupported-device-key"): any other key type.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

    if isinstance(public_key, x25519.X25519PublicKey):
        return WRAP_SCHEMES[0]
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        return WRAP_SCHEMES[1]
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
        return WRAP_SCHEMES[2]
    raise BundleError("device key type is not supported",
                      expected="X25519, ECDH P-256, or RSA >= 2048 bits (OAEP)",
                      found=type(public_key).__name__, code="unsupported-device-key")


def _oaep(label: bytes) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def wrap_data_key(data_key: bytes, public_key: Any, bundle_id: bytes, recipient: str) -> tuple[str, str]:
    """Wrap ``data_key`` for one device; return ``(scheme, base64 wrapped bytes)``."""
    scheme = scheme_for(public_key)
    info = wrap_info(bundle_id, recipient)
    if scheme == WRAP_SCHEMES[2]:
        wrapped = public_key.encrypt(data_key, _oaep(info))
    else:
        wrapped = _hpke("X25519" if scheme == WRAP_SCHEMES[0] else "P256").encrypt(
            data_key, public_key, info=info)
    return scheme, base64.b64encode(wrapped).decode()


def unwrap_data_key(scheme: str, wrapped_b64: str, private_key: Any, bundle_id: bytes,
                    recipient: str) -> bytes:
    """Unwrap a data key with the device's private key.

    Raises:
        IntegrityError(code="wrapped-key-invalid"): ``scheme`` is none of WRAP_SCHEMES (the
            key file is corrupted).
        DeviceMismatchError(code="wrong-device-key-type"): a known scheme for another key type.
        IntegrityError(code="unwrap-failed"): the wrapped key does not open (tampered, or made
            for another device or bundle).
    """
    if scheme not in WRAP_SCHEMES:
        raise IntegrityError("the wrapped key file is corrupted: unknown wrap scheme",
                             expected=", ".join(WRAP_SCHEMES), found=repr(scheme)[:64],
                             fix="re-add this device with edgemed keys add-device",
                             code="wrapped-key-invalid")
    mine = scheme_for(private_key.public_key())
    if mine != scheme:
        raise DeviceMismatchError("wrapped key scheme does not fit this device key",
                                  expected=mine, found=str(scheme)[:64],
                                  fix="pass the device key this bundle was sealed for, or re-add "
                                  "this device with edgemed keys add-device",
                                  code="wrong-device-key-type")
    info = wrap_info(bundle_id, recipient)
    try:
        wrapped = base64.b64decode(wrapped_b64, validate=True)
        if scheme == WRAP_SCHEMES[2]:
            key = private_key.decrypt(wrapped, _oaep(info))
        else:
            key = _hpke("X25519" if scheme == WRAP_SCHEMES[0] else "P256").decrypt(
                wrapped, private_key, info=info)
    except Exception:  # InvalidTag, ValueError (bad base64 / bad encapsulation / OAEP failure)
        raise IntegrityError(
            "the wrapped data key does not open with this device key",
            fix="the keys/ entry is damaged or for another device; re-add the device",
            code="unwrap-failed",
        ) from None
    if len(key) != DATA_KEY_BYTES:
        raise IntegrityError("unwrapped data key has the wrong size", code="unwrap-failed")
    return key


def sha256_hex(data: bytes | memoryview) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()
