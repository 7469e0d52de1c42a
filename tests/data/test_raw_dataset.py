"""DICOM files without the Part 10 header (no preamble, no DICM, no File Meta Information) are
read as raw datasets, with a warning; the guard keeps refusing what cannot be read."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edgemed.errors import InvalidInputError
from edgemed_runtime import PreprocessSpec
from edgemed_runtime.dicom.guard import (
    RAW_DATASET_WARNING,
    is_raw_dataset,
    looks_like_raw_dataset,
    read_dataset,
)
from edgemed_runtime.sdk import load_input

SPEC = PreprocessSpec(window=(40.0, 400.0), size=(16, 16))


@pytest.fixture(scope="module")
def part10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgemed.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("p10")
    return make_dataset(root, n_patients=1, slices_per_patient=1, size=32, seed=1).paths[0]


def _raw_bytes(src: Path, *, implicit: bool, keep_meta: bool = False) -> bytes:
    """``src``'s dataset written without preamble/DICM (and without File Meta unless kept)."""
    ds = pydicom.dcmread(src)
    buf = io.BytesIO()
    if keep_meta:  # group 0002 first, still no preamble and no DICM
        meta = ds.file_meta
        meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit
                                  else pydicom.uid.ExplicitVRLittleEndian)
        from pydicom.filewriter import write_file_meta_info

        write_file_meta_info(pydicom.filebase.DicomFileLike(buf), meta, enforce_standard=False)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


@pytest.mark.parametrize("implicit, keep_meta", [(True, False), (False, False), (False, True)])
def test_raw_dataset_reads_like_its_part10_file(part10: Path, tmp_path: Path, implicit: bool,
                                                keep_meta: bool) -> None:
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(_raw_bytes(part10, implicit=implicit, keep_meta=keep_meta))
    assert raw.read_bytes()[128:132] != b"DICM"
    assert is_raw_dataset(raw) and not is_raw_dataset(part10)
    ds = read_dataset(raw)
    assert ds.file_meta.TransferSyntaxUID == (pydicom.uid.ImplicitVRLittleEndian if implicit
                                              else pydicom.uid.ExplicitVRLittleEndian)
    np.testing.assert_array_equal(load_input(raw, SPEC), load_input(part10, SPEC))


def test_raw_dataset_without_suffix_calibrates(part10: Path, tmp_path: Path, caplog) -> None:
    from edgemed.dicom import load_folder

    (tmp_path / "export" / "p1").mkdir(parents=True)
    (tmp_path / "export" / "p1" / "IM1").write_bytes(_raw_bytes(part10, implicit=True))
    with caplog.at_level("WARNING", logger="edgemed.dicom"):
        la = load_folder(tmp_path / "export", SPEC, labelled=False)
    assert la.x.shape == (1, 1, 16, 16)
    assert "1 file(s) without the DICOM Part 10 header" in caplog.text


@pytest.mark.parametrize("head, why", [
    (b"MZ" + b"\0" * 200, "executable"),
    (b"\x7fELF" + b"\0" * 200, "executable"),
    (b"\xfe\xed\xfa\xce" + b"\0" * 200, "Mach-O"),
    (b"hello, this is a text file\n" * 8, "text"),
    (b"\x09\x00\x10\x00" + b"\0" * 200, "odd (private) group first"),
    (b"\x08\x00\x16", "too short"),
])
def test_what_is_no_dataset_stays_refused(tmp_path: Path, head: bytes, why: str) -> None:
    assert not looks_like_raw_dataset(head), why
    f = tmp_path / "x.dcm"
    f.write_bytes(head)
    with pytest.raises(InvalidInputError) as e:
        read_dataset(f)
    assert e.value.code == "not-dicom"


def test_raw_dataset_keeps_the_length_and_truncation_guards(part10: Path, tmp_path: Path) -> None:
    data = _raw_bytes(part10, implicit=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-100])  # pixel data shorter than declared
    with pytest.raises(InvalidInputError) as e:
        load_input(cut, SPEC)
    assert e.value.code in ("truncated", "declared-length", "pixel-length-mismatch")
    big = bytearray(data)
    # an implicit-VR element declaring 4 GiB - 2 bytes at the end of the file
    big += (0x7FE10010).to_bytes(4, "little")[2:] + (0x7FE10010).to_bytes(4, "little")[:2]
    big += (0xFFFFFFF0).to_bytes(4, "little")
    hostile = tmp_path / "len.dcm"
    hostile.write_bytes(bytes(big))
    with pytest.raises(InvalidInputError) as e:
        read_dataset(hostile)
    assert e.value.code in ("declared-length", "truncated", "corrupt")


def test_raw_deflated_dataset_is_inflated_within_the_budget(part10: Path, tmp_path: Path) -> None:
    """File Meta at byte 0 declaring Deflate: the guard's budget applies, never pydicom's inflate."""
    from pydicom.filewriter import write_file_meta_info

    ds = pydicom.dcmread(part10)
    meta = ds.file_meta
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    body = io.BytesIO()
    del ds.file_meta
    ds.preamble = None
    ds.save_as(body, implicit_vr=False, little_endian=True, enforce_file_format=False)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(body.getvalue() + b"\0" * (64 << 20)) + bomb.flush()  # 64 MiB of padding
    buf = io.BytesIO()
    write_file_meta_info(pydicom.filebase.DicomFileLike(buf), meta, enforce_standard=False)
    f = tmp_path / "bomb.dcm"
    f.write_bytes(buf.getvalue() + payload)
    assert is_raw_dataset(f)
    with pytest.raises(InvalidInputError) as e:
        read_dataset(f, max_inflated_bytes=1 << 20)
    assert e.value.code == "inflate-budget"


def test_predict_carries_the_warning(part10: Path, tmp_path: Path, tiny_artifact) -> None:
    from edgemed.predict import predict_files

    raw = tmp_path / "raw.dcm"
    raw.write_bytes(_raw_bytes(part10, implicit=True))
    rows = predict_files(tiny_artifact.path, [raw, part10]).rows
    assert rows[0]["warnings"] == [RAW_DATASET_WARNING] and rows[1]["warnings"] == []
    assert rows[0]["probabilities"] == pytest.approx(rows[1]["probabilities"], abs=1e-6)
