"""Synthetic CT-like DICOM series with a lesion-present/absent label.

Valid DICOM (CT Image Storage, proper UIDs, HU stored with Rescale Slope/Intercept, a stored
window), several patients and scanner models. Deterministic for a given seed. Optionally some
MONOCHROME1 slices (Secondary Capture, stored inverted so they display like the others) and some
patients written as one multi-frame file (Multi-frame Grayscale Word Secondary Capture).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MF_GREY_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"
WINDOW = (40, 400)
SCANNERS = (
    ("ACME Medical", "Tomo 64"),
    ("Northwind Imaging", "CT-Vista 128"),
    ("Contoso Health", "Helix S"),
)
LABELS = ("no_lesion", "lesion")


@dataclass(frozen=True)
class SyntheticSet:
    """What ``make_dataset`` wrote: files, labels (0/1) and patient ids, in the same order."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    patients: tuple[str, ...]
    labels_csv: Path
    class_names: tuple[str, ...] = LABELS


def make_slice(rng: np.random.Generator, size: int, lesion: bool) -> np.ndarray:
    """One axial slice in Hounsfield units (float32, size x size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, size * 0.02, 2)
    ry, rx = size * rng.uniform(0.33, 0.42), size * rng.uniform(0.38, 0.46)
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    img = np.full((size, size), -1000.0, np.float32)
    img[body <= 1.0] = 40.0 + rng.normal(0, 8)
    img[(body > 0.88) & (body <= 1.0)] = 700.0  # ribs / skull ring
    # a couple of organs of varying density
    for _ in range(3):
        oy, ox = cy + rng.uniform(-0.4, 0.4) * ry, cx + rng.uniform(-0.4, 0.4) * rx
        r = size * rng.uniform(0.06, 0.12)
        img[((yy - oy) ** 2 + (xx - ox) ** 2) <= r * r] = rng.uniform(-80, 80)
    if lesion:
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.55)
        ly, lx = cy + dist * ry * np.sin(ang), cx + dist * rx * np.cos(ang)
        r = size * rng.uniform(0.05, 0.09)
        d2 = (yy - ly) ** 2 + (xx - lx) ** 2
        img += np.where(d2 <= r * r, rng.choice([-1.0, 1.0]) * rng.uniform(90, 160), 0.0).astype(
            np.float32
        )
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return img


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def write_ct_slice(
    path: str | os.PathLike[str],
    hu: np.ndarray,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    instance: int,
    scanner: tuple[str, str],
    seed: int,
    photometric: str = "MONOCHROME2",
) -> None:
    """Write HU values as a 16-bit CT DICOM file (stored = HU + 1024, intercept -1024).

    ``hu`` may be (H, W) or (frames, H, W) (then a multi-frame Secondary Capture file).
    ``photometric="MONOCHROME1"`` writes a Secondary Capture file whose values are mirrored about
    the window centre, so after the VOI and the MONOCHROME1 inversion it displays like the
    MONOCHROME2 original.
    """
    sop_class = CT_IMAGE_STORAGE
    if hu.ndim == 3:
        sop_class = MF_GREY_WORD_SC_STORAGE
    elif photometric == "MONOCHROME1":
        sop_class = SC_IMAGE_STORAGE
    if photometric == "MONOCHROME1":
        hu = (2 * WINDOW[0] - 1) - hu
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_uid = _uid(seed, series_uid, instance)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(seed, study_uid, "for")
    ds.PatientName = f"Synthetic^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyID = "1"
    ds.AccessionNumber = f"ACC{patient_id[-4:]}"
    ds.Modality = "CT"
    if sop_class != CT_IMAGE_STORAGE:
        ds.ConversionType = "WSD"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer, ds.ManufacturerModelName = scanner
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(instance) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = hu.shape[-2:]
    if hu.ndim == 3:
        ds.NumberOfFrames = hu.shape[0]
        ds.FrameIncrementPointer = 0x00200013
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def make_dataset(
    out: str | os.PathLike[str],
    *,
    n_patients: int = 12,
    slices_per_patient: int = 16,
    size: int = 128,
    seed: int = 0,
    lesion_fraction: float = 0.5,
    monochrome1_fraction: float = 0.0,
    multiframe_patients: int = 0,
) -> SyntheticSet:
    """Write a labelled synthetic CT dataset under ``out`` and a ``labels.csv`` beside it.

    Layout: ``out/<patient_id>/IM<nnnn>.dcm``; labels.csv has ``path,label,patient_id``
    (paths relative to ``out``). Each patient gets one scanner; labels are balanced per patient.

    Args:
        monochrome1_fraction: share of single-frame slices written as MONOCHROME1.
        multiframe_patients: the first N patients are written as one multi-frame file
            ``MF0000.dcm`` each (label: lesion if any slice has one).
    With the defaults (0, 0) the output is the same as before these options existed.
    """
    extra = np.random.default_rng([seed, 0x5EED])  # separate stream: defaults stay identical
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    labels: list[int] = []
    patients: list[str] = []
    for p in range(n_patients):
        pid = f"SYN{seed:03d}{p:04d}"
        study_uid = _uid(seed, pid, "study")
        series_uid = _uid(seed, pid, "series")
        scanner = SCANNERS[p % len(SCANNERS)]
        (root / pid).mkdir(exist_ok=True)
        frames: list[np.ndarray] = []
        frame_lesions: list[bool] = []
        for s in range(slices_per_patient):
            lesion = bool(rng.random() < lesion_fraction)
            hu = make_slice(rng, size, lesion)
            if p < multiframe_patients:
                frames.append(hu)
                frame_lesions.append(lesion)
                continue
            mono1 = monochrome1_fraction > 0 and bool(extra.random() < monochrome1_fraction)
            path = root / pid / f"IM{s:04d}.dcm"
            write_ct_slice(path, hu, patient_id=pid, study_uid=study_uid, series_uid=series_uid,
                           instance=s + 1, scanner=scanner, seed=seed,
                           photometric="MONOCHROME1" if mono1 else "MONOCHROME2")
            paths.append(path)
            labels.append(int(lesion))
            patients.append(pid)
        if frames:
            path = root / pid / "MF0000.dcm"
            write_ct_slice(path, np.stack(frames), patient_id=pid, study_uid=study_uid,
                           series_uid=series_uid, instance=1, scanner=scanner, seed=seed)
            paths.append(path)
            labels.append(int(any(frame_lesions)))
            patients.append(pid)
    csv_path = root / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"])
        for path, lab, pid in zip(paths, labels, patients):
            w.writerow([path.relative_to(root).as_posix(), LABELS[lab], pid])
    return SyntheticSet(root, tuple(paths), tuple(labels), tuple(patients), csv_path)
