"""DICOM SEG on the device (edgemed_runtime.outputs): written with highdicom from a synthetic CT
series, read back with ``highdicom.seg.segread`` and compared with the label volume voxel by voxel;
frame-to-source mapping and plane positions checked frame by frame; the refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")
import highdicom as hd  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sr.coding import Code  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from edgemed_runtime.errors import InvalidInputError, MissingDependencyError  # noqa: E402
from edgemed_runtime.outputs import seg_bytes, seg_dataset, write_seg  # noqa: E402
from edgemed_runtime.volume import SliceRef, Volume  # noqa: E402

SENTINEL = "SYNTHETIC^SENTINEL"
NAMES = ("liver", "lesion core")
ALGO = ("edgemed-test-unet", "1.0")


def _rotation(orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """(row direction, column direction) of the image plane in LPS."""
    if orientation == "axial":
        return np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    if orientation == "sagittal":
        return np.array([0.0, 1, 0]), np.array([0.0, 0, -1])
    a, b = np.deg2rad(20.0), np.deg2rad(15.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    return rot[:, 0], rot[:, 1]


def make_series(n: int = 10, size: int = 32, orientation: str = "axial",
                seed: int = 0) -> list[Dataset]:
    """``n`` single-frame CT slices of ``size`` x ``size``, in ascending position order."""
    rng = np.random.default_rng(seed)
    row, col = _rotation(orientation)
    normal = np.cross(row, col)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    origin = np.array([-20.0, -30.5, 40.25])
    out = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = SENTINEL, "SENT-0001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "CT", 3, k + 1
        ds.Manufacturer, ds.ImageType = "synthetic", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *col)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin + k * 2.5 * normal]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.5
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
        out.append(ds)
    return out


def volume_of(series: list[Dataset], *, reverse: bool = False) -> Volume:
    """A Volume as ``read_series`` makes it: slices in array order, headers without pixel data."""
    ordered = list(reversed(series)) if reverse else list(series)
    first, second = ordered[0], ordered[1]
    row, col = np.asarray(first.ImageOrientationPatient[:3]), np.asarray(first.ImageOrientationPatient[3:])
    dy, dx = (float(v) for v in first.PixelSpacing)
    aff = np.eye(4)
    aff[:3, 0] = np.asarray(second.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)
    aff[:3, 1], aff[:3, 2], aff[:3, 3] = col * dy, row * dx, np.asarray(first.ImagePositionPatient, float)
    headers = []
    for ds in ordered:
        h = Dataset()
        h.update({e.tag: e for e in ds if e.keyword != "PixelData"})
        h.file_meta = ds.file_meta
        headers.append(h)
    array = np.stack([np.frombuffer(ds.PixelData, np.int16).reshape(ds.Rows, ds.Columns)
                      for ds in ordered]).astype(np.float32) - 1024
    return Volume(array=array, affine=aff, series_uid=first.SeriesInstanceUID,
                  study_uid=first.StudyInstanceUID, frame_of_reference_uid=first.FrameOfReferenceUID,
                  modality="CT", slices=tuple(SliceRef(CTImageStorage, ds.SOPInstanceUID) for ds in ordered),
                  headers=tuple(headers))


def make_labels(shape: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    """Two labels: 1 on most slices, 2 only on slices 2..5 (absent on the others); asymmetric in
    z, y and x so that any flip or offset changes the voxels."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    lab = np.zeros(shape, np.uint8)
    for k in range(z - 1):
        lab[k, 3 + k % 4:14 + k, 4:20 - k % 3] = 1
    lab[2:6, 18:26, 20:29] = 2
    lab[(rng.random(shape) < 0.02) & (lab == 0)] = 1
    return lab


def readback(data: bytes, vol: Volume) -> tuple[hd.seg.Segmentation, np.ndarray]:
    """The SEG read with highdicom and its label volume in the source's slice order."""
    seg = hd.seg.segread(data)
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(vol.sop_uids), combine_segments=True,
        assert_missing_frames_are_empty=True)
    return seg, labels


def frame_sources(seg: hd.seg.Segmentation) -> list[tuple[str, int, list[float]]]:
    """(referenced source SOP UID, segment number, plane position) of every SEG frame."""
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        out.append((uid, int(number), [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]))
    return out


@pytest.mark.parametrize("orientation,reverse", [("axial", False), ("axial", True), ("sagittal", False),
                                                 ("oblique", False)])
def test_binary_seg_reads_back_voxel_by_voxel(orientation: str, reverse: bool) -> None:
    series = make_series(n=10, orientation=orientation)
    vol = volume_of(series, reverse=reverse)
    labels = make_labels(vol.shape)
    data = seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO)
    seg, back = readback(data, vol)
    assert back.shape == labels.shape and np.array_equal(back, labels)
    # frame i: the slice it came from, at that slice's position, holding that slice's mask
    by_uid = {ds.SOPInstanceUID: ds for ds in series}
    k_of = {uid: k for k, uid in enumerate(vol.sop_uids)}
    frames = frame_sources(seg)
    pixels = seg.pixel_array if seg.NumberOfFrames > 1 else seg.pixel_array[None]
    for f, (uid, number, pos) in enumerate(frames):
        assert np.allclose(pos, [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-4)
        assert np.array_equal(pixels[f].astype(bool), labels[k_of[uid]] == number)
    nonempty = {(k, s) for k in range(vol.shape[0]) for s in (1, 2) if (labels[k] == s).any()}
    assert seg.NumberOfFrames == len(nonempty) == len({(k_of[u], s) for u, s, _ in frames})
    assert any(not (labels[k] == 2).any() for k in range(vol.shape[0]))  # label 2 absent somewhere


def test_multi_frame_source_maps_frames_by_number() -> None:
    """An Enhanced (multi-frame) CT source: the volume's slices name frames, here in the reverse
    of the file's frame order; SEG frame i references the frame its slice came from."""
    series = make_series(n=8, orientation="oblique")
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(series, series_instance_uid=hd.UID(), series_number=5,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    positions = [np.asarray(g.PlanePositionSequence[0].ImagePositionPatient, float)
                 for g in mf.PerFrameFunctionalGroupsSequence]
    frames = [1 + int(np.argmin([np.linalg.norm(p - np.asarray(ds.ImagePositionPatient, float))
                                 for p in positions])) for ds in series]
    assert frames == list(range(len(series), 0, -1))  # the file's frames run the other way
    header = Dataset()
    header.update({e.tag: e for e in mf if e.keyword != "PixelData"})
    vol = volume_of(series).evolve(slices=tuple(SliceRef(mf.SOPClassUID, mf.SOPInstanceUID, f) for f in frames),
                          headers=(header,))
    labels = make_labels(vol.shape)
    seg = hd.seg.segread(seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO))
    back = seg.get_pixels_by_source_frame(mf.SOPInstanceUID, source_frame_numbers=frames,
                                          combine_segments=True, assert_missing_frames_are_empty=True)
    assert np.array_equal(back, labels)
    for item in seg.PerFrameFunctionalGroupsSequence:
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        pos = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        assert src.ReferencedSOPInstanceUID == mf.SOPInstanceUID
        assert np.allclose(pos, positions[int(src.ReferencedFrameNumber) - 1], atol=1e-4)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "oblique"])
def test_series_read_from_files_round_trips(orientation: str, tmp_path: Path) -> None:
    """The real path: files on disk (written in reverse order) -> read_series -> SEG -> highdicom."""
    read_series = pytest.importorskip("edgemed_runtime.dicom.series").read_series
    series = make_series(n=10, orientation=orientation, seed=4)
    for i, ds in enumerate(reversed(series)):
        ds.save_as(tmp_path / f"IM{i:03d}.dcm", enforce_file_format=True)
    vol = read_series(tmp_path)
    assert vol.sop_uids == tuple(ds.SOPInstanceUID for ds in series)
    labels = make_labels(vol.shape, seed=5)
    seg, back = readback(seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO), vol)
    assert np.array_equal(back, labels)
    by_uid = {ds.SOPInstanceUID: ds for ds in series}
    for uid, _, pos in frame_sources(seg):
        assert np.allclose(pos, [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-4)


def test_seg_references_series_and_frame_of_reference() -> None:
    series = make_series(n=8)
    vol = volume_of(series)
    labels = make_labels(vol.shape)
    seg = hd.seg.segread(seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO, series_number=901))
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    assert seg.SeriesInstanceUID != series[0].SeriesInstanceUID and seg.SeriesNumber == 901
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == series[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(vol.sop_uids)
    assert seg.SegmentationType == "BINARY"
    segs = seg.SegmentSequence
    assert [s.SegmentLabel for s in segs] == list(NAMES)
    assert segs[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert segs[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # SCT Tissue
    assert segs[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "lesion core"
    algo = segs[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ALGO
    assert seg.PatientID == series[0].PatientID  # the SEG belongs to the patient (PHI: in memory)


def test_explicit_codes_and_uids() -> None:
    vol = volume_of(make_series(n=8))
    organ = (Code("123037004", "SCT", "Anatomical Structure"), Code("64033007", "SCT", "Kidney"))
    uid_series, uid_sop = generate_uid(), generate_uid()
    seg = seg_dataset(make_labels(vol.shape), vol, label_names=("kidney", "x"), algorithm=ALGO,
                      codes={"kidney": organ}, series_uid=uid_series, sop_uid=uid_sop)
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == (uid_series, uid_sop)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    with pytest.raises(InvalidInputError) as err:
        seg_dataset(make_labels(vol.shape), vol, label_names=("kidney", "x"), algorithm=ALGO,
                    codes={"spleen": organ})
    assert err.value.code == "bad-label-names"


def test_fractional_round_trip_within_one_step() -> None:
    vol = volume_of(make_series(n=8, orientation="oblique"))
    rng = np.random.default_rng(3)
    probs = rng.random((2, *vol.shape)).astype(np.float32)
    probs[:, :2] = 0.0  # empty frames, omitted
    probs[1, 5] = 1.0
    labels = (probs.argmax(0) + 1).astype(np.uint8) * (probs.max(0) > 0.5)
    data = seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO, probabilities=probs)
    seg = hd.seg.segread(data)
    assert seg.SegmentationType == "FRACTIONAL" and seg.NumberOfFrames == 2 * (vol.shape[0] - 2)
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(vol.sop_uids),
                                             assert_missing_frames_are_empty=True)
    back = np.moveaxis(back, -1, 0)
    assert back.shape == probs.shape
    assert float(np.abs(back - probs).max()) <= 1 / 255 + 1e-6
    assert np.array_equal(back[1, 5], probs[1, 5]) and not back[:, :2].any()


def test_all_background_still_writes_a_seg(tmp_path: Path) -> None:
    vol = volume_of(make_series(n=8))
    path = tmp_path / "out" / "seg.dcm"
    write_seg(str(path), np.zeros(vol.shape, np.uint8), vol, label_names=NAMES, algorithm=ALGO)
    _, back = readback(path.read_bytes(), vol)
    assert not back.any() and back.shape == vol.shape
    assert not [p for p in path.parent.iterdir() if p.name != "seg.dcm"]  # no temporary left


def _refusal(labels: np.ndarray, vol: Volume, **options: object) -> InvalidInputError:
    options = {"label_names": NAMES, "algorithm": ALGO, **options}
    with pytest.raises(InvalidInputError) as err:
        seg_bytes(labels, vol, **options)
    text = str(err.value)
    assert SENTINEL not in text and "SYNTHETIC" not in text and "SENT-0001" not in text
    return err.value


def test_no_frame_of_reference_is_refused() -> None:
    vol = volume_of(make_series(n=8))
    for h in vol.headers:
        del h.FrameOfReferenceUID
    err = _refusal(make_labels(vol.shape), vol.evolve(frame_of_reference_uid=""))
    assert err.code == "seg-no-frame-of-reference" and "NIfTI" in (err.fix or "")


def test_bad_inputs_are_refused() -> None:
    vol = volume_of(make_series(n=8))
    labels = make_labels(vol.shape)
    assert _refusal(labels[:, :-1], vol).code == "mask-grid"
    assert _refusal(labels + 1, vol).code == "bad-labels"  # label 3 with two names
    assert _refusal(labels.astype(np.float32), vol).code == "bad-labels"
    assert _refusal(labels, vol, label_names=("liver",)).code == "bad-labels"
    assert _refusal(labels, vol, label_names=("liver", "liver")).code == "bad-label-names"
    assert _refusal(labels, vol, label_names=("liver", "a\\b")).code == "bad-label-names"
    assert _refusal(labels, vol, algorithm=("only-name",)).code == "bad-algorithm"
    probs = np.zeros((2, *vol.shape), np.float32)
    assert _refusal(labels, vol, probabilities=probs[:1]).code == "bad-probabilities"
    assert _refusal(labels, vol, probabilities=probs + 2).code == "bad-probabilities"
    assert _refusal(labels, vol, probabilities=probs[:, :, 1:]).code == "mask-grid"


def test_volume_not_from_dicom_points_to_nifti() -> None:
    vol = Volume.from_array(np.zeros((8, 32, 32), np.float32), spacing=(2.5, 0.8, 0.7))
    err = _refusal(np.zeros(vol.shape, np.uint8), vol)
    assert err.code == "seg-no-source" and "nifti" in (err.fix or "").lower()


def test_headers_that_disagree_with_the_volume_are_refused() -> None:
    series = make_series(n=8)
    vol = volume_of(series)
    labels = make_labels(vol.shape)
    flipped = vol.evolve(affine=volume_of(series, reverse=True).affine)  # slices one way, grid the other
    assert _refusal(labels, flipped).code == "seg-geometry"
    assert _refusal(labels, vol.evolve(headers=vol.headers[:-1])).code == "seg-geometry"
    shifted = vol.affine.copy()
    shifted[:3, 3] += shifted[:3, 0]  # the grid one slice up: every label one slice off
    assert _refusal(labels, vol.evolve(affine=shifted)).code == "seg-geometry"
    small = volume_of(make_series(n=8, size=24))
    assert _refusal(labels[:, :24, :24], small.evolve(headers=vol.headers,
                                                      slices=vol.slices)).code == "seg-geometry"


def test_source_without_type2_attributes_or_thickness_still_writes() -> None:
    vol = volume_of(make_series(n=8))
    for h in vol.headers:
        del h.PatientID, h.AccessionNumber, h.StudyID, h.SliceThickness
    labels = make_labels(vol.shape)
    seg, back = readback(seg_bytes(labels, vol, label_names=NAMES, algorithm=ALGO), vol)
    assert np.array_equal(back, labels) and seg.PatientID == ""
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(vol.spacing[0])
    assert all("PatientID" not in h and "SliceThickness" not in h for h in vol.headers)  # untouched


def test_what_highdicom_refuses_is_a_typed_error_naming_the_attribute() -> None:
    vol = volume_of(make_series(n=8))
    for h in vol.headers:
        del h.PixelSpacing
    err = _refusal(make_labels(vol.shape), vol)
    assert err.code == "seg-failed" and "PixelSpacing" in (err.found or "")


def test_missing_highdicom_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    vol = volume_of(make_series(n=8))
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        seg_bytes(make_labels(vol.shape), vol, label_names=NAMES, algorithm=ALGO)
    assert "edgemed-runtime[outputs]" in (err.value.fix or "")
