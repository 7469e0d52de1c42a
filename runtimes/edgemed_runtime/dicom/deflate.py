"""Read a Deflated Explicit VR Little Endian dataset (PS3.5 A.5) with a budget on its inflated size.

pydicom inflates such a file in one ``zlib.decompress`` call with no limit: a 1 MB file of
deflated zeros becomes gigabytes before anything can check it. Here the stream is inflated in
bounded chunks: first up to ``header_allowance`` bytes, enough to read the image attributes
(group 0028); then up to ``header_allowance`` + the pixel bytes those attributes declare (Rows x
Columns x Frames x Samples x Bits Allocated), never more than ``max_bytes``. Beyond that the file
is refused (``inflate-budget``). The inflated bytes are then parsed by pydicom as Explicit VR
Little Endian; Pixel Data keeps the inflated buffer itself (no second copy), so reading one of
these files peaks at about its declared pixel size + ``header_allowance``.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

HEADER_ALLOWANCE = 16 << 20  # inflated bytes allowed besides the declared pixel data
MAX_INFLATED_BYTES = 512 << 20  # the inflated dataset never exceeds this
CHUNK = 1 << 20  # compressed bytes read, and most inflated bytes produced, per step
PIXEL_DATA = 0x7FE00010


class ViewReader:
    """A seekable read-only file-like over a memoryview; ``read`` copies only what it returns."""

    name = "<inflated dataset>"

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        if end <= self._pos:
            return b""
        out = bytes(self._view[self._pos:end])
        self._pos = end
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _budget_error(limit: int, what: str) -> InvalidInputError:
    return InvalidInputError(
        "the deflated dataset inflates to more than edgemed allows", code="inflate-budget",
        expected=f"<= {limit} inflated bytes ({what})", found=f"more than {limit} bytes",
        fix="the file is hostile or malformed; re-export it uncompressed, or raise the budget "
            "(read_dataset(max_inflated_bytes=..., header_allowance=...)) if it is genuine")


def _inflate_until(f: BinaryIO, d: Any, buf: bytearray, upto: int) -> None:
    """Inflate from ``f`` into ``buf`` until ``len(buf) == upto`` or the deflate stream ends.

    Raises:
        InvalidInputError: ``corrupt`` (not deflate data), ``truncated`` (the stream is cut).
    """
    try:
        while len(buf) < upto and not d.eof:
            want = min(CHUNK, upto - len(buf))
            data = d.unconsumed_tail or f.read(CHUNK)
            out = d.decompress(data, want)
            if not data and not out:
                raise InvalidInputError(
                    "the deflated dataset is cut short", code="truncated",
                    expected="a complete deflate stream (PS3.5 A.5)",
                    found="end of file before the end of the stream", fix="the file is truncated")
            buf += out
    except zlib.error:
        raise InvalidInputError(
            "the deflated dataset does not inflate", code="corrupt",
            expected="a raw deflate stream after the File Meta Information (PS3.5 A.5)",
            found="invalid deflate data", fix="re-export the file") from None


def _int(ds: "Dataset", keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword, default)
        return max(0, int(value)) if value not in (None, "") else default
    except Exception:
        return 0


def declared_pixel_bytes(buf: bytearray) -> int | None:
    """Bytes of pixel data the image attributes at the start of ``buf`` declare, or None when
    ``buf`` ends before them (no top-level element past group 0028 in it). 0 for no image."""
    from pydicom.filereader import read_dataset

    reached = False

    def past_image_attributes(tag: int, vr: str | None, length: int) -> bool:
        nonlocal reached
        reached = reached or tag > 0x0028FFFF
        return reached

    view = memoryview(buf)
    try:
        try:
            head = read_dataset(ViewReader(view), False, True, stop_when=past_image_attributes,
                                defer_size=1024)  # large values: skipped, not copied
        except Exception:
            return None  # cut inside a sequence: the image attributes are further on
        if not reached:
            return None
        samples = (_int(head, "Rows", 0) * _int(head, "Columns", 0)
                   * max(1, _int(head, "NumberOfFrames", 1)) * _int(head, "SamplesPerPixel", 1))
        return (samples * _int(head, "BitsAllocated", 0) + 7) // 8
    finally:
        view.release()


def inflate(f: BinaryIO, *, max_bytes: int = MAX_INFLATED_BYTES,
            header_allowance: int = HEADER_ALLOWANCE) -> bytearray:
    """Inflate the raw deflate stream from ``f``'s position with the budget above.

    Returns:
        the inflated dataset (Explicit VR Little Endian).
    Raises:
        InvalidInputError: ``inflate-budget``, ``corrupt``, ``truncated``.
    """
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    buf = bytearray()
    _inflate_until(f, d, buf, min(header_allowance, max_bytes) + 1)
    if d.eof:
        if len(buf) > max_bytes:
            raise _budget_error(max_bytes, "the cap")
        return buf
    pixels = declared_pixel_bytes(buf)
    if pixels is None:
        raise _budget_error(header_allowance, "attributes before the image attributes")
    limit = min(max_bytes, header_allowance + pixels)
    _inflate_until(f, d, buf, limit + 1)
    if len(buf) > limit:
        what = "the cap" if limit == max_bytes else (
            f"{pixels} declared pixel bytes + {header_allowance} for the other attributes")
        raise _budget_error(limit, what)
    return buf


def parse_inflated(buf: bytearray, stop_before_pixels: bool = False) -> "Dataset":
    """Parse an inflated dataset with pydicom. A native Pixel Data value becomes ``buf`` itself,
    trimmed in place (a bytearray), so the pixels are not copied a second time."""
    from pydicom.dataelem import RawDataElement
    from pydicom.filereader import read_dataset
    from pydicom.tag import BaseTag

    at_pixels = False

    def stop(tag: int, vr: str | None, length: int) -> bool:
        nonlocal at_pixels
        at_pixels = tag == PIXEL_DATA
        return at_pixels

    pixel: tuple[str, int, int] | None = None
    view = memoryview(buf)
    try:
        reader = ViewReader(view)
        ds = read_dataset(reader, False, True, stop_when=stop)
        if not at_pixels or stop_before_pixels:
            return ds
        pos = reader.tell()
        vr = bytes(view[pos + 4:pos + 6])
        if vr in (b"OB", b"OW", b"UN") and len(view) >= pos + 12:
            (length,) = struct.unpack_from("<I", view, pos + 8)
            if length != 0xFFFFFFFF and pos + 12 + length <= len(view):
                pixel = (vr.decode(), pos + 12, length)
                reader.seek(pos + 12 + length)
        if pixel is None:
            reader.seek(pos)  # unusual Pixel Data: pydicom reads it (a copy)
        tail = read_dataset(reader, False, True, parent_encoding=ds._character_set)._dict
    finally:
        view.release()
    if pixel is not None:
        vr_name, start, length = pixel
        del buf[start + length:]
        del buf[:start]  # advances the bytearray's start: no copy
        tag = BaseTag(PIXEL_DATA)
        ds[tag] = RawDataElement(tag, vr_name, length, buf, start, False, True)
    for tag, elem in tail.items():  # elements after Pixel Data (e.g. trailing padding)
        ds[tag] = elem
    return ds
