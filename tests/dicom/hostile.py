"""Builders of hostile / broken DICOM files for the tests and the fuzz run (no downloads)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SENTINEL = "ZZSENTINEL^PATIENT"


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
    data = valid_file(path).read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def not_dicom(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.4\n" + SENTINEL.encode() + b"\n" * 200)
    return path
