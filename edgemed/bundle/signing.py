"""Writing OMS (OpenSSF Model Signing v1.0) signatures with an ECDSA P-256 publisher key.

The output is byte-for-byte the structure ``model_signing sign key`` writes (Sigstore bundle
v0.3, DSSE envelope, in-toto statement, predicate ``https://model_signing/signature/v1.0``),
so ``model_signing verify key`` accepts it; the device runtime verifies it without that package.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from edgemed_runtime.sdk import (
    build_signature,
    build_statement,
    canonical_json,
    check_publisher_key,
    pae,
    publisher_hint,
)


def sign_files(files: Mapping[str, bytes], private_key: Any, model_name: str) -> bytes:
    """Return ``model.sig`` bytes signing ``{relative path: bytes}`` with ``private_key``.

    Raises:
        BundleError(code="unsupported-publisher-key"): the key is not ECDSA P-256.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not hasattr(private_key, "public_key") or not hasattr(private_key, "sign"):
        from ..errors import BundleError

        raise BundleError("publisher key is not a private key", code="unsupported-publisher-key")
    pub = private_key.public_key()
    check_publisher_key(pub)
    digests = {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    statement = canonical_json(build_statement(model_name, digests))
    der = private_key.sign(pae(statement), ec.ECDSA(hashes.SHA256()))
    sig = build_signature(statement, der, publisher_hint(pub))
    return json.dumps(sig, separators=(",", ":")).encode()
