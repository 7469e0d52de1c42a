"""The Storage SCP (pynetdicom): AE title, address, the storage SOP classes and the transfer
syntaxes the reader decodes, the calling-AE allow-list, optional TLS with client certificates,
and C-ECHO (Verification).

``start_scp(cfg, on_store, on_end)`` starts a threaded server; ``on_store(event)`` returns the
C-STORE status, ``on_end(assoc_id)`` is called when an association is released or aborted.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Callable

from ..errors import InvalidInputError
from ._deps import pynetdicom
from .config import ScpConfig, TlsConfig

# Image storage SOP classes a 2D / volume model may be fed (PS3.4 B.5).
DEFAULT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG processing
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
)
# Transfer syntaxes offered; only those pydicom can decode here are accepted.
CANDIDATE_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
VERIFICATION = "1.2.840.10008.1.1"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99")


def decodable_syntaxes(candidates: tuple[str, ...] = CANDIDATE_SYNTAXES) -> tuple[str, ...]:
    """The transfer syntaxes among ``candidates`` that this installation decodes."""
    from ..dicom.decode import require_decoder
    from ..errors import EdgemedError

    out = []
    for ts in candidates:
        if ts in UNCOMPRESSED:
            out.append(ts)
            continue
        try:
            require_decoder(ts)
        except EdgemedError:
            continue
        out.append(ts)
    return tuple(out)


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context that requires a client certificate chaining to ``tls.ca``.

    Raises:
        InvalidInputError: ``bad-tls`` (a file missing or not a certificate / key).
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        ctx.load_verify_locations(cafile=str(tls.ca))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInputError("the TLS certificate, key or CA cannot be loaded", code="bad-tls",
                                found=type(exc).__name__, fix="check node.tls cert / key / ca "
                                "(PEM files)") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _check(cfg: ScpConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from pydicom.uid import UID

    sops = cfg.sop_classes or DEFAULT_SOP_CLASSES
    syntaxes = cfg.transfer_syntaxes or decodable_syntaxes()
    bad = [u for u in (*sops, *syntaxes) if not UID(u).is_valid]
    if bad:
        raise InvalidInputError("a SOP class or transfer syntax is not a valid UID",
                                code="bad-node-config", found=", ".join(bad)[:200],
                                fix="use dotted UIDs in node.sop_classes / node.transfer_syntaxes")
    return sops, syntaxes


def start_scp(cfg: ScpConfig, on_store: Callable[[Any], int],
              on_end: Callable[[int], None], on_rejected: Callable[[Any], None]) -> Any:
    """Start the server in its threads; returns pynetdicom's ThreadedAssociationServer.

    Raises:
        InvalidInputError: ``bad-node-config`` (bad UIDs), ``bad-tls``; ``port-in-use``.
        MissingDependencyError: pynetdicom is not installed.
    """
    pn = pynetdicom()
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    sops, syntaxes = _check(cfg)
    ae = pn.AE(ae_title=cfg.ae_title)
    ae.maximum_associations = 32
    for sop in sops:
        ae.add_supported_context(sop, list(syntaxes))
    ae.add_supported_context(VERIFICATION, list(UNCOMPRESSED[:2]))
    if cfg.allowed_calling_aes:
        ae.require_calling_aet = list(cfg.allowed_calling_aes)
    handlers = [(pn.evt.EVT_C_STORE, on_store),
                (pn.evt.EVT_RELEASED, lambda e: on_end(id(e.assoc))),
                (pn.evt.EVT_ABORTED, lambda e: on_end(id(e.assoc))),
                (pn.evt.EVT_REJECTED, on_rejected)]
    ctx = tls_context(cfg.tls) if cfg.tls is not None else None
    try:
        return ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=handlers,
                               ssl_context=ctx)
    except OSError as exc:
        raise InvalidInputError("the DICOM port cannot be opened", code="port-in-use",
                                found=f"{cfg.host}:{cfg.port}: {exc.strerror}",
                                fix="choose another node.port or stop what holds it") from None
