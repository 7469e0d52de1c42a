"""Builders of hostile / broken DICOM files for the tests and the fuzz run (no downloads)."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

SENTINEL = "ZZSENTINEL^PATIENT"
DEFLATED_TS = b"1.2.840.10008.1.2.1.99"  # 22 characters: even, no padding


def valid_file(path: Path, *, rows: int = 32, cols: int = 32, name: str = SENTINEL) -> Path:
    """A small valid CT-like file whose PatientName (and other text) is the sentinel."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["hostile", name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = name
    ds.PatientID = name.replace("^", "")[:16]
    ds.StudyDescription = name
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


def _meta(ts: bytes = b"1.2.840.10008.1.2.1\0") -> bytes:
    body = (_element(0x0002, 0x0001, b"OB", b"\0\1")
            + _element(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
            + _element(0x0002, 0x0003, b"UI", b"1.2.3.4\0")
            + _element(0x0002, 0x0010, b"UI", ts))
    return b"\0" * 128 + b"DICM" + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def nested_sequences(path: Path, depth: int) -> Path:
    """Sequences nested ``depth`` deep (undefined lengths), then a tiny image."""
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    seq_open = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    nested = (seq_open + item_start) * depth + (item_end + seq_end) * depth
    path.write_bytes(_meta() + _element(0x0010, 0x0010, b"PN", SENTINEL.encode()) + nested)
    return path


def huge_length(path: Path) -> Path:
    """An element that declares ~4 GB (not undefined length) in a tiny file."""
    path.write_bytes(_meta() + _element(0x0010, 0x0010, b"PN", SENTINEL.encode())
                     + _element(0x0008, 0x1030, b"UT", b"x" * 16, length=0xFFFFFFF0))
    return path


def absurd_dimensions(path: Path) -> Path:
    """A header claiming 65535 x 65535 x 10000 frames with 16 bytes of pixel data."""
    from pydicom import dcmread

    ds = dcmread(valid_file(path))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 10000
    ds.PixelData = b"\0" * 16
    ds.save_as(str(path), enforce_file_format=True)
    return path


def wrong_pixel_length(path: Path) -> Path:
    """Rows x Columns say 32 x 32 x 2 bytes; Pixel Data holds 100 bytes."""
    from pydicom import dcmread

    ds = dcmread(valid_file(path))
    ds.PixelData = b"\1" * 100
    ds.save_as(str(path), enforce_file_format=True)
    return path


def missing_pixels(path: Path) -> Path:
    from pydicom import dcmread

    ds = dcmread(valid_file(path))
    del ds.PixelData
    ds.save_as(str(path), enforce_file_format=True)
    return path


def executable_preamble(path: Path) -> Path:
    """A valid file whose preamble starts with a Windows PE ("MZ") header."""
    data = bytearray(valid_file(path).read_bytes())
    data[:128] = (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\0" * 118)
    path.write_bytes(bytes(data))
    return path


def truncated(path: Path, keep: float = 0.6) -> Path:
    return truncate_file(valid_file(path), keep)


def truncate_file(path: Path, keep: float = 0.6) -> Path:
    """Keep the first ``keep`` of ``path``'s bytes."""
    data = path.read_bytes()
    return _write_chunks(path, [data[: int(len(data) * keep)]])


def not_dicom(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.4\n" + SENTINEL.encode() + b"\n" * 200)
    return path


def _write_chunks(path: Path, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to a temporary name beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=".hostile-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_ZERO_BLOCK = 16 << 20


@lru_cache(maxsize=1)
def _deflated_zero_block() -> bytes:
    """16 MiB of zeros as a self-contained raw-deflate run (full flush: no back references
    outside it), so it can be repeated to stand for any multiple of 16 MiB of zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(bytes(_ZERO_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)


def _deflate(parts: Iterable[bytes | int]) -> Iterator[bytes]:
    """Raw deflate of ``parts`` (bytes, or an int standing for that many zero bytes), streamed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for part in parts:
        if isinstance(part, bytes):
            yield c.compress(part)
            continue
        blocks, rest = divmod(part, _ZERO_BLOCK)
        if blocks:
            yield c.flush(zlib.Z_FULL_FLUSH)
            yield from (_deflated_zero_block() for _ in range(blocks))
        if rest:
            yield c.compress(bytes(rest))
    yield c.flush()


def _image_attrs(rows: int, cols: int) -> bytes:
    us = lambda e, v: _element(0x0028, e, b"US", struct.pack("<H", v))  # noqa: E731
    return (_element(0x0028, 0x0002, b"US", struct.pack("<H", 1))
            + _element(0x0028, 0x0004, b"CS", b"MONOCHROME2 ")
            + us(0x0010, rows) + us(0x0011, cols) + us(0x0100, 16) + us(0x0101, 12)
            + us(0x0102, 11) + us(0x0103, 0))


def deflated_bomb(path: Path, payload: int = 1 << 30, where: str = "private") -> Path:
    """A Deflated Explicit VR Little Endian file of ~``payload / 1000`` bytes that inflates to
    ``payload`` zero bytes more than its 32 x 32 16-bit image needs.

    ``where``: ``"private"`` (an OB in private group 0009, before the image attributes),
    ``"late"`` (an OB in private group 0029, after them) or ``"pixels"`` (Pixel Data itself
    declares ``payload`` bytes).
    """
    rows = cols = 32
    head = (_element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
            + _element(0x0008, 0x0060, b"CS", b"CT"))
    private = [_element(0x0009, 0x0010, b"LO", b"ZZBOMB"),
               _element(0x0009, 0x1000, b"OB", b"", length=payload), payload]
    late = [_element(0x0029, 0x0010, b"LO", b"ZZBOMB"),
            _element(0x0029, 0x1000, b"OB", b"", length=payload), payload]
    pixels = rows * cols * 2 if where != "pixels" else payload
    parts: list[bytes | int] = [head, *(private if where == "private" else []),
                                _element(0x0010, 0x0010, b"PN", SENTINEL.encode()),
                                _image_attrs(rows, cols), *(late if where == "late" else []),
                                _element(0x7FE0, 0x0010, b"OW", b"", length=pixels), pixels]
    return _write_chunks(path, [_meta(DEFLATED_TS), *_deflate(parts)])


def deflated_image(path: Path, rows: int, cols: int) -> Path:
    """A consistent Deflated Explicit VR Little Endian image (16-bit zeros, Rows x Columns),
    written by hand in streamed chunks (for large images)."""
    pixels = rows * cols * 2
    parts: list[bytes | int] = [_element(0x0008, 0x0060, b"CS", b"CT"),
                                _element(0x0010, 0x0010, b"PN", SENTINEL.encode()),
                                _image_attrs(rows, cols),
                                _element(0x7FE0, 0x0010, b"OW", b"", length=pixels), pixels]
    return _write_chunks(path, [_meta(DEFLATED_TS), *_deflate(parts)])


def deflated_twin(src: Path, path: Path) -> Path:
    """``src`` re-encoded as Deflated Explicit VR Little Endian by pydicom's own writer."""
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fd, tmp = tempfile.mkstemp(prefix=".hostile-", dir=path.parent)
    os.close(fd)
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def preamble_only(path: Path) -> Path:
    """Only the 128-byte preamble and the ``DICM`` prefix: no meta, no dataset."""
    return _write_chunks(path, [b"\0" * 128 + b"DICM"])


def deflated_garbage(path: Path) -> Path:
    """A deflated transfer syntax whose dataset is not deflate data (a reserved block type)."""
    return _write_chunks(path, [_meta(DEFLATED_TS), b"\xff" * 1000])


def no_file_meta(path: Path) -> Path:
    """Preamble, ``DICM``, then a dataset without any File Meta Information (group 0002)."""
    return _write_chunks(path, [b"\0" * 128 + b"DICM", _element(0x0008, 0x0060, b"CS", b"CT"),
                                _element(0x0010, 0x0010, b"PN", SENTINEL.encode())])


def deflated_huge_meta_element(path: Path) -> Path:
    """A deflated file whose File Meta Information ends with an element declaring ~4 GB."""
    meta = _meta(DEFLATED_TS) + _element(0x0002, 0x0102, b"OB", b"\0" * 16, length=0xFFFFFFF0)
    return _write_chunks(path, [meta, *_deflate([_element(0x0010, 0x0010, b"PN", SENTINEL.encode())])])
