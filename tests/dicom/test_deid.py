"""De-identification with the PS3.15 Annex E Basic Profile: no listed attribute survives, private
and overlay/curve data go, UIDs are remapped consistently so studies stay linked, pixels stay."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from edgemed.dicom.deid import METHOD, UidMapper, action_for, basic_profile, deidentify
from edgemed.errors import InvalidInputError

KEY = bytes(range(32))
MARK = "PHIMARK"


def _value(vr: str, n: int):
    return {
        "PN": f"{MARK}^N{n}", "LO": f"{MARK}{n}", "SH": f"{MARK}{n}"[:16], "CS": f"{MARK}{n}"[:16],
        "LT": f"{MARK} text {n}", "ST": f"{MARK} text {n}", "UT": f"{MARK} text {n}",
        "UC": f"{MARK}{n}", "AE": f"{MARK}{n}"[:16], "UR": f"http://{MARK.lower()}/{n}",
        "DA": "20200102", "TM": "101112", "DT": "20200102101112", "AS": "042Y",
        "UI": f"1.2.826.0.1.3680043.99.{n}", "IS": str(100 + n), "DS": "1.5",
        "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 1.5, "FD": 1.5,
        "OB": MARK.encode() * 2, "OW": MARK.encode() * 2,
    }.get(vr)


def _phi_dataset(study_uid: str, sop_uid: str, ref_uid: str | None) -> FileDataset:
    with warnings.catch_warnings():  # some dummy values exceed their VR's length: fine here
        warnings.simplefilter("ignore")
        return _build_phi_dataset(study_uid, sop_uid, ref_uid)


def _build_phi_dataset(study_uid: str, sop_uid: str, ref_uid: str | None) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    for n, row in enumerate(basic_profile()):
        if "x" in row.pattern:
            continue
        tag = int(row.pattern, 16)
        if tag >> 16 in (0x0000, 0x0002, 0xFFFA, 0xFFFC):
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr == "SQ":
            item = Dataset()
            item.PatientName = f"{MARK}^Nested{n}"
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.99.9{n}"
            ds.add_new(tag, "SQ", Sequence([item]))
            continue
        value = _value(vr, n)
        if value is not None:
            ds.add_new(tag, vr, value)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.PatientID = f"{MARK}PID"
    ds.PatientName = f"{MARK}^Patient"
    if ref_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = meta.MediaStorageSOPClassUID
        ref.ReferencedSOPInstanceUID = ref_uid
        ds.ReferencedImageSequence = [ref]
    ds.Modality, ds.Manufacturer = "CT", "Scanner Co"
    ds.add_new(0x00090010, "LO", f"{MARK} private creator")
    ds.add_new(0x00091001, "LO", f"{MARK} private value")
    ds.add_new(0x60003000, "OW", MARK.encode() * 4)
    ds.add_new(0x60004000, "LT", f"{MARK} overlay comment")
    ds.add_new(0x50000010, "US", 3)
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    return ds


@pytest.fixture()
def phi_folder(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    study = "1.2.826.0.1.3680043.99.5000"
    first = _phi_dataset(study, study + ".1.1", None)
    second = _phi_dataset(study, study + ".1.2", study + ".1.1")
    other = _phi_dataset("1.2.826.0.1.3680043.99.6000", "1.2.826.0.1.3680043.99.6000.1.1", None)
    originals = {}
    for name, ds in (("a/one.dcm", first), ("a/two.dcm", second), ("three.dcm", other)):
        ds.save_as(src / name, enforce_file_format=True)
        originals[name] = pydicom.dcmread(src / name)
    (src / "notes.txt").write_text("not dicom")
    return src, originals


def test_profile_table_loaded():
    rows = basic_profile()
    assert len(rows) > 400
    assert action_for(0x00100010) == "Z" and action_for(0x0020000D) == "U"
    assert action_for(0x50001234) == "X" and action_for(0x60023000) == "X"
    assert action_for(0x00280010) is None  # Rows is not in the profile


@pytest.mark.filterwarnings("ignore::UserWarning")  # the test itself reads the over-long PHI values
def test_no_profile_attribute_survives(phi_folder, tmp_path):
    src, originals = phi_folder
    report = deidentify(src, tmp_path / "out", key=KEY)
    assert sorted(report.written) == ["a/one.dcm", "a/two.dcm", "three.dcm"]
    assert report.skipped == (("notes.txt", "not-dicom"),)
    for name, orig in originals.items():
        raw = (tmp_path / "out" / name).read_bytes()
        assert MARK.encode() not in raw, f"{name}: identifying text survived"
        out = pydicom.dcmread(tmp_path / "out" / name)
        checked = 0
        for elem in orig.iterall():
            action = action_for(int(elem.tag))
            if action is None or elem.tag.group == 0x7FE0:
                continue
            checked += 1
            for e in out.iterall():
                if e.tag == elem.tag and e.value not in (None, "", b"") and e.VR != "SQ":
                    assert e.value != elem.value, f"{elem.keyword or elem.tag} ({action}) survived"
        assert checked > 300
        assert not any(e.tag.is_private for e in out.iterall())
        assert not any(e.tag.group in (0x5000, 0x6000) for e in out)
        assert out.PatientIdentityRemoved == "YES" and out.DeidentificationMethod == METHOD
        assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert out.PixelData == orig.PixelData
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_uids_remapped_consistently_and_studies_linked(phi_folder, tmp_path):
    src, originals = phi_folder
    deidentify(src, tmp_path / "out", key=KEY)
    one, two, three = (pydicom.dcmread(tmp_path / "out" / n) for n in ("a/one.dcm", "a/two.dcm", "three.dcm"))
    assert one.StudyInstanceUID == two.StudyInstanceUID != originals["a/one.dcm"].StudyInstanceUID
    assert one.SeriesInstanceUID == two.SeriesInstanceUID
    assert three.StudyInstanceUID != one.StudyInstanceUID
    assert two.ReferencedImageSequence[0].ReferencedSOPInstanceUID == one.SOPInstanceUID
    assert one.PatientID == two.PatientID == three.PatientID != originals["three.dcm"].PatientID
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in (one.SOPInstanceUID, one.StudyInstanceUID))
    # same key -> same mapping on a second run; another key -> different UIDs
    deidentify(src, tmp_path / "again", key=KEY)
    deidentify(src, tmp_path / "other", key=bytes(32))
    again = pydicom.dcmread(tmp_path / "again" / "a/one.dcm")
    other = pydicom.dcmread(tmp_path / "other" / "a/one.dcm")
    assert again.SOPInstanceUID == one.SOPInstanceUID != other.SOPInstanceUID


def test_bad_key_and_paths(tmp_path):
    with pytest.raises(InvalidInputError) as info:
        UidMapper(b"short")
    assert info.value.code == "deid-key"
    with pytest.raises(InvalidInputError) as info:
        deidentify(tmp_path / "missing", tmp_path / "out", key=KEY)
    assert info.value.code == "not-found"
    (tmp_path / "in").mkdir()
    with pytest.raises(InvalidInputError) as info:
        deidentify(tmp_path / "in", tmp_path / "in" / "out", key=KEY)
    assert info.value.code == "same-path"


@pytest.fixture()
def mixed_folder(tmp_path):
    """Synthetic CT slices (make_dataset) plus a preamble-only file, a truncated file, a file
    without File Meta Information, a deflate bomb and a text file (labels.csv)."""
    from edgemed.data.synthetic import make_dataset

    from . import hostile

    syn = make_dataset(tmp_path / "in", n_patients=2, slices_per_patient=2, size=16, seed=3)
    good = sorted(p.relative_to(syn.root).as_posix() for p in syn.paths)
    (syn.root / "bad").mkdir()
    hostile.preamble_only(syn.root / "bad" / "preamble_only.dcm")
    hostile.truncated(syn.root / "bad" / "truncated.dcm", 0.6)
    hostile.no_file_meta(syn.root / "bad" / "no_meta.dcm")
    hostile.deflated_bomb(syn.root / "bomb.dcm", 64 << 20)
    return syn.root, good


def test_folder_with_broken_files_is_complete_for_the_rest(mixed_folder, tmp_path):
    src, good = mixed_folder
    out = tmp_path / "out"
    report = deidentify(src, out, key=KEY)
    assert sorted(report.written) == good and len(good) == 4
    assert dict(report.failed) == {"bad/preamble_only.dcm": "truncated",
                                   "bad/truncated.dcm": "declared-length",
                                   "bad/no_meta.dcm": "missing-file-meta",
                                   "bomb.dcm": "inflate-budget"}
    assert [p for p, _ in report.skipped] == ["labels.csv"] and not report.ok
    d = report.to_dict()
    assert d["written"] == 4 and len(d["failed"]) == 4
    assert "Synthetic" not in str(d) and "ZZSENTINEL" not in str(d)  # paths and codes only
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == good, "exactly the good files: nothing partial, no temp files"
    for rel in good:
        ds = pydicom.dcmread(out / rel)
        assert ds.PatientIdentityRemoved == "YES" and "Synthetic" not in str(ds.PatientName)
        assert ds.PixelData == pydicom.dcmread(src / rel).PixelData
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "staging left"


def test_folder_output_must_be_new_or_empty(mixed_folder, tmp_path):
    src, good = mixed_folder
    (tmp_path / "empty").mkdir()
    assert sorted(deidentify(src, tmp_path / "empty", key=KEY).written) == good
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(InvalidInputError) as info:
        deidentify(src, taken, key=KEY)
    assert info.value.code == "output-exists"
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_single_broken_file_raises_typed(tmp_path):
    from . import hostile

    with pytest.raises(InvalidInputError) as info:
        deidentify(hostile.preamble_only(tmp_path / "p.dcm"), tmp_path / "o.dcm", key=KEY)
    assert info.value.code == "truncated" and not (tmp_path / "o.dcm").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.dcm"]
