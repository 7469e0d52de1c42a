"""Results to the destination by DICOMweb STOW-RS (PS3.18 10.5): one multipart/related POST
of an ``application/dicom`` part per result, with the standard library's ``urllib``.

``stow(url, data, timeout_s=..., context=...)`` returns '' when the origin server stored the
instance (HTTP 200 and no Failed SOP Sequence in the response), else a short reason without
PHI (the HTTP status, or a network error's kind). Re-sending the same instance (same SOP
Instance UID) is what makes a retry after an unanswered POST safe: a PACS stores it once.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InvalidInputError

FAILED_SOP_SEQUENCE = "00081198"


def client_context(ca: Path | None, cert: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    """A TLS client context verifying the server against ``ca`` (None: the system's CAs),
    presenting ``cert`` / ``key`` when given.

    Raises:
        InvalidInputError: ``bad-tls`` (a file missing or not PEM).
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(ca) if ca is not None else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInputError("the destination's TLS CA, certificate or key cannot be loaded",
                                code="bad-tls", found=type(exc).__name__,
                                fix="check destination.tls / destination.stow_ca (PEM files)"
                                ) from None
    return ctx


def multipart(data: bytes) -> tuple[bytes, str]:
    """(body, Content-Type) of a STOW-RS request carrying one DICOM Part 10 instance."""
    boundary = "edgemed-" + os.urandom(12).hex()
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _failed(payload: bytes) -> bool:
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(doc.get(FAILED_SOP_SEQUENCE, {}).get("Value"))


def stow(url: str, data: bytes, *, timeout_s: float,
         context: ssl.SSLContext | None = None) -> str:
    """POST one instance to ``url`` (the ``.../studies`` resource); '' on success."""
    body, ctype = multipart(data)
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": ctype, "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as r:
            status, payload = r.status, r.read()
    except urllib.error.HTTPError as exc:
        return f"STOW-RS HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"STOW-RS unreachable: {type(reason).__name__}"
    if status != 200 or _failed(payload):
        return f"STOW-RS HTTP {status}" + (" (failed instance)" if _failed(payload) else "")
    return ""
