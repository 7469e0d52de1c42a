"""read_series: a DICOM series -> Volume (sort, spacing, affine, rescale, enhanced multi-frame),
checked against hand-computed geometry, MONAI's PydicomReader and highdicom, and every bad input
of issue 15 refused with its own code and no patient data in the message."""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from edgemed.data.synthetic_series import SeriesInfo, nifti_affine, write_ct_series
from edgemed_runtime import InvalidInputError, SliceRef, Volume, read_series
from edgemed_runtime.dicom import SeriesFilter

SMALL = (8, 24, 32)
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _series(folder: Path, **kw: Any) -> SeriesInfo:
    kw.setdefault("shape", SMALL)
    kw.setdefault("seed", 7)
    return write_ct_series(folder, **kw)


def _refused(code: str, info: SeriesInfo | None, *args: Any, **kw: Any) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as err:
        read_series(*args, **kw)
    exc = err.value
    assert exc.code == code, str(exc)
    text = str(exc)
    assert "SYNTHETIC^" not in text.upper()  # the writers' PatientName sentinel
    if info is not None:
        assert info.patient_name not in text and info.patient_id not in text
    return exc


def _rewrite(path: Path, change: Any) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


# --- geometry --------------------------------------------------------------------------------

def test_axial_series_hand_computed_affine(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", spacing=(2.5, 0.8, 0.7))
    vol = read_series(tmp_path / "s")
    assert isinstance(vol, Volume) and vol.shape == SMALL and vol.array.dtype == np.float32
    first = pydicom.dcmread(info.files[0])
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    expected = np.array([[0.0, 0.0, 0.7, x0],   # k -> +z (S) * 2.5; j -> +y (P) * 0.8; i -> +x (L) * 0.7
                         [0.0, 0.8, 0.0, y0],
                         [2.5, 0.0, 0.0, z0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, (2.5, 0.8, 0.7), atol=1e-6)
    assert np.array_equal(vol.array, info.hu)
    assert vol.series_uid == info.series_uid and vol.study_uid == info.study_uid
    assert vol.frame_of_reference_uid == info.frame_of_reference_uid and vol.modality == "CT"


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal", "oblique"])
def test_orientations_match_the_written_grid(tmp_path: Path, orientation: str) -> None:
    info = _series(tmp_path / orientation, orientation=orientation, spacing=(2.0, 0.7, 0.9))
    vol = read_series(tmp_path / orientation)
    np.testing.assert_allclose(vol.affine, info.affine, atol=1e-5)
    assert np.array_equal(vol.array, info.hu)
    # slices ascend along the normal (row cosine x column cosine)
    ds = pydicom.dcmread(info.files[0])
    iop = np.array(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    assert float(vol.affine[:3, 0] @ normal) > 0


def test_shuffled_file_order_gives_the_same_volume(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", orientation="oblique")
    files = [str(f) for f in info.files]
    random.Random(3).shuffle(files)
    a, b = read_series(tmp_path / "s"), read_series(files)
    assert np.array_equal(a.array, b.array) and np.array_equal(a.affine, b.affine)
    assert a.slices == b.slices
    assert [ds.SOPInstanceUID for ds in b.headers] == [s.sop_instance_uid for s in b.slices]


def test_rescale_is_applied_per_slice(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", vary_rescale=True)
    intercepts = {float(pydicom.dcmread(f, stop_before_pixels=True).RescaleIntercept) for f in info.files}
    assert intercepts == {-1024.0, -1000.0}
    assert np.array_equal(read_series(tmp_path / "s").array, info.hu)


def test_slice_refs_headers_and_info(tmp_path: Path) -> None:
    info = _series(tmp_path / "s")
    vol = read_series(tmp_path / "s")
    assert all(isinstance(s, SliceRef) and s.frame is None for s in vol.slices)
    assert vol.sop_uids == tuple(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                 for f in info.files)
    assert len(vol.headers) == SMALL[0] and all("PixelData" not in h for h in vol.headers)
    assert vol.info["slices"] == SMALL[0] and (vol.info["rows"], vol.info["columns"]) == SMALL[1:]
    assert vol.info["files"] == [f.name for f in info.files] and vol.info["dropped"] == []


def test_memory_one_slice_at_a_time(tmp_path: Path) -> None:
    """Above what the volume keeps (array + headers), decoding needs a few slices' worth of memory
    at its peak, not the series' pixel data (all of it raw would be 16 slices' worth here)."""
    import tracemalloc

    _series(tmp_path / "s", shape=(32, 256, 256), organs=False)
    read_series(tmp_path / "s")  # warm imports and caches
    tracemalloc.start()
    try:
        vol = read_series(tmp_path / "s")
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slice_bytes = 256 * 256 * 4
    assert kept >= vol.array.nbytes
    assert peak - kept < 6 * slice_bytes, (peak - kept) / slice_bytes


def test_matches_monai_pydicom_reader(tmp_path: Path) -> None:
    """MONAI's PydicomReader gives (x, y, z) data and a RAS affine: our (z, y, x) array and LPS
    affine, with the axes permuted and L/P flipped, must agree."""
    from monai.data import PydicomReader

    _series(tmp_path / "s", orientation="oblique", spacing=(2.0, 0.7, 0.9), vary_rescale=True)
    vol = read_series(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = PydicomReader()
        data, meta = reader.get_data(reader.read(str(tmp_path / "s")))
    np.testing.assert_allclose(nifti_affine(vol.affine), np.asarray(meta["affine"]), atol=1e-4)
    np.testing.assert_allclose(np.asarray(data).transpose(2, 1, 0), vol.array, atol=1e-4)


def test_matches_highdicom_affine(tmp_path: Path) -> None:
    from highdicom.spatial import create_affine_matrix_from_attributes

    info = _series(tmp_path / "s", orientation="sagittal", spacing=(3.0, 0.75, 0.6))
    vol = read_series(tmp_path / "s")
    first = pydicom.dcmread(info.files[0], stop_before_pixels=True)
    hd = create_affine_matrix_from_attributes(
        image_position=first.ImagePositionPatient, image_orientation=first.ImageOrientationPatient,
        pixel_spacing=first.PixelSpacing, spacing_between_slices=3.0, slices_first=True,
        index_convention=("D", "R"),  # numpy order: rows down, then columns right
        handedness="LEFT_HANDED")  # slices ascending along row x column cosine (ITK / MONAI)
    np.testing.assert_allclose(vol.affine, hd, atol=1e-4)


# --- enhanced multi-frame ------------------------------------------------------------------

def _enhanced_ct(path: Path, hu: np.ndarray, order: list[int], intercepts: list[int]) -> np.ndarray:
    """An Enhanced CT file whose frames are the slices of ``hu`` in ``order`` (so not sorted),
    each with its own Rescale Intercept; returns the expected affine."""
    n, rows, cols = hu.shape
    row, col = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])  # coronal: normal = +y
    normal, step, origin = np.cross(row, col), 1.5, np.array([-10.0, -20.0, 30.0])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = uid = generate_uid(entropy_srcs=["enhanced", str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ENHANCED_CT, uid, "CT"
    ds.StudyInstanceUID = ds.SeriesInstanceUID = ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["e"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["enhanced-series"])
    ds.PatientName, ds.PatientID = "SYNTHETIC^PATIENT99", "SYN-ENH"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.6, 0.9], 1.5
    plane.ImageOrientationPatient = [*row, *col]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [plane]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, stored = [], []
    for k, intercept in zip(order, intercepts):
        item, pos, pvt = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [float(v) for v in origin + k * step * normal]
        pvt.RescaleIntercept, pvt.RescaleSlope, pvt.RescaleType = intercept, 1, "HU"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [pvt]
        frames.append(item)
        stored.append((hu[k] - intercept).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = normal * step, col * 0.6, row * 0.9, origin
    return affine


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hu = np.rint(rng.normal(0, 300, (6, 10, 12))).astype(np.float32)
    order = [3, 0, 5, 1, 4, 2]
    affine = _enhanced_ct(tmp_path / "enh.dcm", hu, order, [-1024, -1000, -1024, -900, -1024, -1000])
    vol = read_series([tmp_path / "enh.dcm"])
    assert np.array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-9)
    assert [s.frame for s in vol.slices] == [order.index(k) + 1 for k in range(6)]
    assert len(vol.headers) == 1 and "PixelData" not in vol.headers[0]
    assert vol.info["files"] == ["enh.dcm"]


def test_pydicom_enhanced_ct_testdata() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data's eCT_Supplemental.dcm is not installed")
    ds = pydicom.dcmread(path)
    vol = read_series([path])
    positions = [np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
                 for f in ds.PerFrameFunctionalGroupsSequence]
    iop = np.array(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                   .ImageOrientationPatient, float)
    proj = [float(p @ np.cross(iop[:3], iop[3:])) for p in positions]
    first = int(np.argmin(proj))
    np.testing.assert_allclose(vol.origin, positions[first], atol=1e-6)
    assert vol.slices[0].frame == first + 1
    pvt = ds.SharedFunctionalGroupsSequence[0].get("PixelValueTransformationSequence") or \
        ds.PerFrameFunctionalGroupsSequence[first].PixelValueTransformationSequence
    expected = ds.pixel_array[first] * float(pvt[0].RescaleSlope) + float(pvt[0].RescaleIntercept)
    np.testing.assert_allclose(vol.array[0], expected, atol=1e-4)


def test_multiframe_without_plane_positions_is_refused() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's emri_small.dcm is not installed")
    exc = _refused("series-geometry", None, [path])
    assert "emri_small.dcm frame 1" in exc.found


# --- localizers, several series, filters ------------------------------------------------------

def test_tagged_localizer_is_dropped_with_a_note(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", localizer=True)
    vol = read_series(tmp_path / "s")
    assert vol.info["dropped"] == [{"file": "IM0000.dcm", "reason": "ImageType LOCALIZER"}]
    assert np.array_equal(vol.array, info.hu)
    exc = _refused("series-orientation", info, tmp_path / "s", drop_localizers=False)
    assert "IM0000.dcm" in exc.found


def test_localizer_series_beside_the_volume_is_dropped(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", localizer=True)
    _rewrite(info.localizer_file, lambda ds: setattr(ds, "SeriesInstanceUID", generate_uid(entropy_srcs=["loc"])))
    vol = read_series(tmp_path / "s")
    assert vol.series_uid == info.series_uid and np.array_equal(vol.array, info.hu)
    [note] = vol.info["dropped"]
    assert note["file"] == "IM0000.dcm" and note["reason"].startswith("ImageType LOCALIZER (series ")
    exc = _refused("several-series", info, tmp_path / "s", drop_localizers=False)
    assert "CT, 1 slice)" in exc.found and "CT, 8 slices)" in exc.found


def test_untagged_localizer_is_refused(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", localizer="untagged")
    exc = _refused("series-orientation", info, tmp_path / "s")
    assert "IM0000.dcm" in exc.found and "1 of 9" in exc.found
    assert "localizer" in (exc.fix or "").lower() and "SeriesFilter" in (exc.fix or "")


def test_two_series_listed_then_picked(tmp_path: Path) -> None:
    a = _series(tmp_path / "a", series_index=0)
    b = _series(tmp_path / "b", series_index=1, orientation="coronal", shape=(5, 24, 32))
    exc = _refused("several-series", a, tmp_path)
    assert a.series_uid in exc.found and b.series_uid in exc.found
    assert "CT, 8 slices" in exc.found and "CT, 5 slices" in exc.found
    assert read_series(tmp_path, b.series_uid).shape == (5, 24, 32)
    picked = read_series(tmp_path, series_filter=SeriesFilter(orientation=("coronal",)))
    assert picked.series_uid == b.series_uid
    assert read_series(tmp_path, series_filter=SeriesFilter(min_slices=6)).series_uid == a.series_uid
    exc = _refused("empty", a, tmp_path, series_filter=SeriesFilter(modality=("MR",)))
    assert "modality CT is not one of MR" in exc.found
    _refused("series-not-found", a, tmp_path, "1.2.3.4")


def test_series_filter_accepts_series(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", localizer=True)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in info.files]
    assert SeriesFilter().accepts_series(headers) == (True, "")
    assert SeriesFilter(image_type=("original", "PRIMARY", "AXIAL"), modality=("CT",),
                        orientation=("axial",), min_slices=8, max_slices=8).accepts_series(headers)[0]
    ok, why = SeriesFilter(image_type=("DERIVED",)).accepts_series(headers)
    assert not ok and why == "instance 0: ImageType lacks DERIVED"
    ok, why = SeriesFilter(max_slices=4).accepts_series(headers)
    assert not ok and why == "8 slices, more than 4"
    ok, why = SeriesFilter(body_part=("HEAD",)).accepts_series(headers)
    assert not ok and "body part ABDOMEN" in why
    loc = pydicom.dcmread(info.localizer_file, stop_before_pixels=True)
    ok, why = SeriesFilter(image_type=("AXIAL",)).accepts_series([loc])
    assert not ok and "AXIAL" in why
    assert SeriesFilter().accepts_series([]) == (False, "the series has no instances")
    with pytest.raises(InvalidInputError) as err:
        SeriesFilter(min_slices=5, max_slices=2)
    assert err.value.code == "bad-filter"


def test_dataset_builder_uses_the_same_filter(tmp_path: Path) -> None:
    from edgemed.dicom import SeriesFilter as SdkFilter
    from edgemed.dicom import index_folder

    assert SdkFilter is SeriesFilter
    info = _series(tmp_path / "s", shape=(3, 16, 16), localizer=True)
    records, skipped = index_folder(tmp_path / "s")
    assert not skipped and len(records) == 4
    kept = [r.path for r in records if SeriesFilter(image_type=("ORIGINAL", "AXIAL")).accepts(r)]
    assert kept == [f.name for f in info.files]
    assert [r.path for r in records if SeriesFilter(image_type=("LOCALIZER",)).accepts(r)] == ["IM0000.dcm"]


# --- bad input (issue 15) --------------------------------------------------------------------

def test_missing_slice(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", gap=True)
    exc = _refused("series-gap", info, tmp_path / "s")
    assert "between slice 3 (IM0004.dcm) and 4 (IM0006.dcm)" in exc.found
    vol = read_series(tmp_path / "s", spacing_tolerance=1.5)  # accepted on request: mean step
    assert vol.shape[0] == SMALL[0] - 1
    assert vol.spacing[0] == pytest.approx(2.5 * (SMALL[0] - 1) / (SMALL[0] - 2))  # 7 steps over 6


def test_duplicate_positions(tmp_path: Path) -> None:
    info = _series(tmp_path / "s")
    dup = tmp_path / "s" / "IM0003b.dcm"
    shutil.copy(info.files[2], dup)
    _rewrite(dup, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid(entropy_srcs=["dup"])))
    exc = _refused("series-duplicate", info, tmp_path / "s")
    assert "IM0003.dcm" in exc.found and "IM0003b.dcm" in exc.found


def test_one_slice(tmp_path: Path) -> None:
    info = _series(tmp_path / "s", shape=(1, 24, 32))
    _refused("series-single", info, tmp_path / "s")


def test_slices_of_different_sizes(tmp_path: Path) -> None:
    info = _series(tmp_path / "s")

    def crop(ds: Dataset) -> None:
        arr = ds.pixel_array[:, :28].copy()
        ds.Columns, ds.PixelData = 28, arr.tobytes()

    _rewrite(info.files[4], crop)
    exc = _refused("series-shape", info, tmp_path / "s")
    assert "IM0005.dcm" in exc.found and "1 of 8" in exc.found and "24 x 32" in exc.expected


def test_undecodable_pixel_data(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    info = _series(tmp_path / "s", transfer_syntax="RLELossless")
    assert np.array_equal(read_series(tmp_path / "s").array, info.hu)  # RLE decodes
    junk = np.random.default_rng(1).integers(0, 255, 300, dtype=np.uint8).tobytes()
    _rewrite(info.files[5], lambda ds: setattr(ds, "PixelData", encapsulate([b"\x02\0\0\0" + junk])))
    exc = _refused("decode-failed", info, tmp_path / "s")
    assert "slice 5 (IM0006.dcm)" in exc.message


def test_no_position(tmp_path: Path) -> None:
    info = _series(tmp_path / "s")
    _rewrite(info.files[2], lambda ds: delattr(ds, "ImagePositionPatient"))
    exc = _refused("series-geometry", info, tmp_path / "s")
    assert "IM0003.dcm" in exc.found


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _refused("empty", None, tmp_path / "empty")
    _refused("not-found", None, tmp_path / "nowhere")
    _refused("empty", None, [])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme").write_text("not DICOM")
    exc = _refused("empty", None, tmp_path / "notes")
    assert "readme" in exc.found


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    info = _series(tmp_path / "s")
    data = info.files[3].read_bytes()
    info.files[3].write_bytes(data[:400])
    with pytest.raises(InvalidInputError) as err:
        read_series(tmp_path / "s")
    assert "IM0004.dcm" in err.value.message and info.patient_name not in str(err.value)


def test_bad_tolerance(tmp_path: Path) -> None:
    _refused("bad-option", None, tmp_path, spacing_tolerance=-1.0)


def test_corrupted_headers_end_in_typed_errors(tmp_path: Path) -> None:
    """Random byte flips in a series: every outcome is a volume or an EdgemedError, no other
    exception, no warning (pydicom's quote values), no patient data in a message."""
    from edgemed_runtime import EdgemedError

    info = _series(tmp_path / "orig", shape=(4, 16, 16))
    rng = random.Random(0)
    codes = set()
    for it in range(40):
        work = tmp_path / f"w{it}"
        shutil.copytree(tmp_path / "orig", work)
        victim = work / rng.choice(info.files).name
        data = bytearray(victim.read_bytes())
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(132, len(data) - 16 * 16 * 2)] = rng.randrange(256)
        victim.write_bytes(bytes(data))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read_series(work)
                codes.add("ok")
            except EdgemedError as exc:
                codes.add(exc.code)
                assert info.patient_name not in str(exc) and info.patient_id not in str(exc)
        assert not caught, [str(w.message)[:80] for w in caught]
        shutil.rmtree(work)
    assert len(codes) >= 3  # the flips hit different guards
