"""The synthetic CT series writer: valid, deterministic DICOM series, organ labels on the grid
read_series returns, NIfTI masks, defects on request, and a labelled multi-series dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from edgemed.data.synthetic_series import (ORGAN_LABELS, nifti_affine, write_ct_series,
                                           write_series_dataset)
from edgemed_runtime import InvalidInputError, read_series

SHAPE = (10, 32, 40)


def test_valid_ct_instances(tmp_path: Path) -> None:
    info = write_ct_series(tmp_path / "s", seed=5, shape=SHAPE, patient_index=3)
    assert len(info.files) == SHAPE[0] and info.localizer_file is None
    headers = [pydicom.dcmread(f) for f in info.files]
    for k, ds in enumerate(headers):
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert UID(uid).is_valid
        assert str(ds.PatientName) == "SYNTHETIC^PATIENT3" and ds.Modality == "CT"
        assert (ds.PixelRepresentation, ds.BitsAllocated, float(ds.RescaleIntercept)) == (1, 16, -1024.0)
        assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.shape == SHAPE[1:]
        assert np.array_equal(ds.pixel_array + float(ds.RescaleIntercept), info.hu[k])
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert len({ds.SOPInstanceUID for ds in headers}) == SHAPE[0]
    assert len({(ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID) for ds in headers}) == 1
    assert headers[0].ManufacturerModelName != write_ct_series(
        tmp_path / "t", seed=5, shape=(2, 8, 8), patient_index=4).scanner[1]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = write_ct_series(tmp_path / "a", seed=11, shape=SHAPE, lesion=True)
    b = write_ct_series(tmp_path / "b", seed=11, shape=SHAPE, lesion=True)
    c = write_ct_series(tmp_path / "c", seed=12, shape=SHAPE, lesion=True)
    assert [f.read_bytes() for f in a.files] == [f.read_bytes() for f in b.files]
    assert a.series_uid == b.series_uid != c.series_uid
    assert not np.array_equal(a.hu, c.hu)


def test_organ_labels_and_lesion(tmp_path: Path) -> None:
    plain = write_ct_series(tmp_path / "n", seed=2, shape=(24, 48, 48), lesion=False)
    sick = write_ct_series(tmp_path / "l", seed=2, shape=(24, 48, 48), lesion=True)
    labels = plain.labels
    assert labels is not None and labels.dtype == np.uint8 and labels.shape == plain.hu.shape
    assert set(np.unique(labels)) == {0, *ORGAN_LABELS}
    assert 40 < float(plain.hu[labels == 1].mean()) < 80       # liver-like
    assert 15 < float(plain.hu[labels == 2].mean()) < 50       # kidney-like
    assert np.array_equal(plain.labels, sick.labels)           # same anatomy, same seed
    bright = lambda info: int(((info.hu > 150) & (info.labels == 1)).sum())  # noqa: E731
    assert bright(plain) == 0 and bright(sick) > 20  # 180 HU in a 60 HU liver, noise sd 10
    none = write_ct_series(tmp_path / "o", seed=2, shape=(4, 16, 16), organs=False)
    assert none.labels is None


@pytest.mark.parametrize("orientation", ["coronal", "oblique"])
def test_labels_follow_the_read_volume(tmp_path: Path, orientation: str) -> None:
    info = write_ct_series(tmp_path / "s", seed=4, shape=SHAPE, orientation=orientation,
                           mask_path=tmp_path / "mask.nii.gz")
    vol = read_series(tmp_path / "s")
    np.testing.assert_allclose(vol.affine, info.affine, atol=1e-5)
    assert np.array_equal(vol.array, info.hu)
    import nibabel as nib

    mask = nib.load(str(info.mask_path))
    assert np.array_equal(np.asarray(mask.dataobj).transpose(2, 1, 0), info.labels)
    np.testing.assert_allclose(mask.affine, nifti_affine(vol.affine), atol=1e-5)
    # the NIfTI (RAS) affine maps voxel (i, j, k) where the LPS affine maps (k, j, i), L/P flipped
    lps = vol.affine @ np.array([3, 5, 7, 1.0])
    ras = mask.affine @ np.array([7, 5, 3, 1.0])
    np.testing.assert_allclose(ras[:3], lps[:3] * np.array([-1, -1, 1]), atol=1e-5)


def test_gap_and_localizers(tmp_path: Path) -> None:
    gap = write_ct_series(tmp_path / "g", seed=1, shape=SHAPE, gap=True)
    assert gap.missing_slice == SHAPE[0] // 2 and len(gap.files) == SHAPE[0] - 1
    assert f"IM{gap.missing_slice + 1:04d}.dcm" not in {f.name for f in gap.files}
    tagged = write_ct_series(tmp_path / "t", seed=1, shape=SHAPE, localizer=True)
    untagged = write_ct_series(tmp_path / "u", seed=1, shape=SHAPE, localizer="untagged")
    loc = pydicom.dcmread(tagged.localizer_file)
    assert "LOCALIZER" in loc.ImageType and loc.SeriesInstanceUID == tagged.series_uid
    assert (loc.Rows, loc.Columns) == SHAPE[1:]
    assert loc.ImageOrientationPatient != pydicom.dcmread(tagged.files[0]).ImageOrientationPatient
    assert "LOCALIZER" not in pydicom.dcmread(untagged.localizer_file).ImageType


@pytest.mark.parametrize("syntax", ["RLELossless", "DeflatedExplicitVRLittleEndian",
                                    "JPEG2000Lossless", "ImplicitVRLittleEndian"])
def test_transfer_syntaxes_round_trip(tmp_path: Path, syntax: str) -> None:
    info = write_ct_series(tmp_path / "s", seed=3, shape=(4, 32, 32), transfer_syntax=syntax)
    assert pydicom.dcmread(info.files[0]).file_meta.TransferSyntaxUID == info.transfer_syntax
    assert np.array_equal(read_series(tmp_path / "s").array, info.hu)


def test_bad_options(tmp_path: Path) -> None:
    for kw in ({"orientation": "upside-down"}, {"transfer_syntax": "JPEGBaseline8Bit"},
               {"shape": (2, 8, 8), "gap": True},
               {"shape": (2, 8, 8), "transfer_syntax": "JPEG2000Lossless"}):
        with pytest.raises(InvalidInputError) as err:
            write_ct_series(tmp_path / "x", seed=0, **kw)  # type: ignore[arg-type]
        assert err.value.code == "bad-option"
    with pytest.raises(InvalidInputError) as err:
        write_series_dataset(tmp_path / "d", n_series=0, seed=0)
    assert err.value.code == "bad-option"


def test_series_dataset(tmp_path: Path) -> None:
    root = write_series_dataset(tmp_path / "ds", n_series=6, seed=9, shape=(6, 24, 24), masks=True,
                                localizers=1, gaps=1)
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "patient_id", "mask"] and len(rows) == 6
    assert sorted(r["label"] for r in rows) == ["lesion"] * 3 + ["normal"] * 3
    assert len({r["patient_id"] for r in rows}) == 3
    scanners, orientations = set(), set()
    for n, row in enumerate(rows):
        folder = root / row["path"]
        assert folder.is_dir() and folder.parent.name == row["patient_id"]
        assert (root / row["mask"]).is_file()
        first = pydicom.dcmread(sorted(folder.glob("IM0001.dcm"))[0], stop_before_pixels=True)
        scanners.add(str(first.ManufacturerModelName))
        if n == 1:  # the gap series
            with pytest.raises(InvalidInputError) as err:
                read_series(folder)
            assert err.value.code == "series-gap"
            continue
        vol = read_series(folder)
        orientations.add(tuple(np.round(vol.affine[:3, 0] / np.linalg.norm(vol.affine[:3, 0]), 3)))
        assert bool(vol.info["dropped"]) == (n == 0)  # the tagged localizer, dropped
    assert len(scanners) == 3 and len(orientations) >= 3


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian"])
def test_fast_writer_writes_what_pydicom_writes(tmp_path: Path, syntax: str) -> None:
    """Uncompressed series are assembled from pre-encoded elements: the same bytes as save_as."""
    from edgemed.data import synthetic_series as ss

    info = write_ct_series(tmp_path / "s", seed=8, shape=(3, 16, 20), transfer_syntax=syntax)
    base = ss._base_dataset(dict(
        patient_index=0, series_index=0, scanner=info.scanner, patient_id=info.patient_id,
        patient_name=info.patient_name, study_uid=info.study_uid, series_uid=info.series_uid,
        for_uid=info.frame_of_reference_uid))
    row, col = ss.cosines("axial")
    kw = dict(sop_uid=str(pydicom.dcmread(info.files[1]).SOPInstanceUID), instance=2,
              geometry=(row, col, info.affine[:3, 3] + info.affine[:3, 0], info.spacing),
              intercept=-1024, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), syntax=info.transfer_syntax)
    ss._write_instance(tmp_path / "pydicom.dcm", base, info.hu[1], **kw)  # type: ignore[arg-type]
    assert (tmp_path / "pydicom.dcm").read_bytes() == info.files[1].read_bytes()
