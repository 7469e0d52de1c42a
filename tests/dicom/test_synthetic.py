"""Synthetic data: valid CT-like DICOM, deterministic, defaults unchanged, MONOCHROME1 and
multi-frame files on request."""

from __future__ import annotations

import hashlib

import pydicom
from pydicom.uid import UID

from edgemed.data.synthetic import CT_IMAGE_STORAGE, make_dataset


def _digest(paths):
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def test_defaults_and_determinism(tmp_path):
    a = make_dataset(tmp_path / "a", n_patients=4, slices_per_patient=3, size=24, seed=9)
    b = make_dataset(tmp_path / "b", n_patients=4, slices_per_patient=3, size=24, seed=9,
                     monochrome1_fraction=0.0, multiframe_patients=0)
    assert _digest(a.paths) == _digest(b.paths) and a.labels == b.labels
    assert len(a.paths) == 12 and len(set(a.patients)) == 4
    scanners = set()
    for p in a.paths:
        ds = pydicom.dcmread(p)
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.PhotometricInterpretation == "MONOCHROME2"
        assert UID(ds.SOPInstanceUID).is_valid and UID(ds.StudyInstanceUID).is_valid
        assert ds.RescaleIntercept == -1024 and "NumberOfFrames" not in ds
        scanners.add(ds.ManufacturerModelName)
    assert len(scanners) == 3


def test_monochrome1_and_multiframe(tmp_path):
    s = make_dataset(tmp_path, n_patients=4, slices_per_patient=3, size=24, seed=9,
                     monochrome1_fraction=0.5, multiframe_patients=1)
    kinds = {}
    for p in s.paths:
        ds = pydicom.dcmread(p)
        kinds.setdefault((ds.PhotometricInterpretation, int(ds.get("NumberOfFrames", 1))), []).append(p)
    assert ("MONOCHROME1", 1) in kinds and ("MONOCHROME2", 1) in kinds and ("MONOCHROME2", 3) in kinds
    assert len(kinds[("MONOCHROME2", 3)]) == 1 and len(s.paths) == 1 + 3 * 3
