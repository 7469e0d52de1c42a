"""Payload compression (docs/bundle-format.md, "Compression"): a payload may be one zlib
(RFC 1950) stream, compressed before encryption. The device decrypts and authenticates it,
then inflates it here with a hard cap at the signed ``uncompressed_length``: output is written
into one buffer of exactly that size, in pieces of at most STEP bytes, so a stream that
inflates further (a decompression bomb) is refused after at most one byte too many, and never
allocates beyond the declared size.
"""

from __future__ import annotations

import zlib
from typing import Any

from .._memory import alloc, zero
from ..errors import IntegrityError
from .format import PayloadEntry

LEVEL = 9  # zlib level used by the SDK
STEP = 1 << 20  # output bytes per inflate call
IN_STEP = 256 << 10  # input bytes fed per call


def _refuse(entry: PayloadEntry, msg: str, found: str, code: str) -> IntegrityError:
    return IntegrityError(
        f"compressed payload {msg}", expected=f"{entry.uncompressed_length} bytes after "
        "decompression, one complete zlib stream", found=f"{entry.path}: {found}",
        fix="the publisher sealed a damaged payload; get a fresh bundle", code=code,
    )


def decompress_payload(entry: PayloadEntry, data: Any) -> Any:
    """Inflate one decrypted payload into a fresh buffer of ``entry.uncompressed_length`` bytes
    (bytearray, or an uninitialised uint8 array from 1 MiB up; wipe it after use). ``data`` is
    not modified (the caller wipes it).

    Raises:
        IntegrityError: ``decompressed-length`` (the stream inflates to more or fewer bytes
            than the signed ``uncompressed_length``), ``decompress-failed`` (not a valid zlib
            stream, truncated, or bytes after its end). Nothing partial is returned: the output
            buffer is wiped before raising.
    """
    total = entry.uncompressed_length
    if total is None or entry.compression != "zlib":
        raise IntegrityError("payload is not zlib-compressed", found=entry.path,
                             code="manifest-invalid")
    src = memoryview(data).cast("B")
    out = alloc(total)
    ov = memoryview(out).cast("B")
    d = zlib.decompressobj()
    pos = fed = 0
    try:
        while not d.eof:
            if d.unconsumed_tail:
                chunk: Any = d.unconsumed_tail
            elif fed < len(src):
                chunk = src[fed:fed + IN_STEP]
                fed += len(chunk)
            else:
                chunk = b""
            # ask for at most one byte past the declared size: enough to detect a bomb
            piece = d.decompress(chunk, min(STEP, total - pos + 1))
            if pos + len(piece) > total:
                raise _refuse(entry, "inflates past its declared size",
                              f"more than {total} bytes", "decompressed-length")
            ov[pos:pos + len(piece)] = piece
            pos += len(piece)
            if not piece and not len(chunk):
                raise _refuse(entry, "stream is truncated", f"{pos} bytes, then end of input",
                              "decompress-failed")
        if d.unused_data or fed < len(src):
            raise _refuse(entry, "has data after the end of its zlib stream",
                          f"{len(d.unused_data) + len(src) - fed} extra bytes", "decompress-failed")
        if pos != total:
            raise _refuse(entry, "inflates to fewer bytes than declared", f"{pos} bytes",
                          "decompressed-length")
    except zlib.error as exc:
        zero(out)
        raise _refuse(entry, "is not a valid zlib stream", str(exc)[:100],
                      "decompress-failed") from None
    except BaseException:
        zero(out)
        raise
    return out


def compress_payload(plain: bytes | memoryview, level: int = LEVEL) -> bytes:
    """One zlib stream of ``plain`` (SDK side; the runtime only inflates)."""
    return zlib.compress(plain, level)
