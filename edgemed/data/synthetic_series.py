"""Synthetic CT series (real DICOM, one file per slice) and their organ labels, for tests and demos.

``write_ct_series`` writes one CT Image Storage series of a phantom defined in patient space (an
elliptic body along the patient's S axis, a spine, a "liver"-like and two "kidney"-like
ellipsoids, optionally a bright lesion in the liver), sampled on the series' voxel grid, so the
same anatomy appears whatever the orientation. Stored int16 with Rescale Intercept -1024 (HU),
UIDs derived from the seed. The label volume (1 = liver, 2 = kidney) is on the same voxel grid as
the array ``edgemed_runtime.dicom.read_series`` returns (slices ascending along the normal).
``write_series_dataset`` writes a folder of such series with a ``labels.csv``. Deterministic for
a given seed. Patient names are the sentinel ``SYNTHETIC^PATIENT<n>``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgemed.errors import InvalidInputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SCANNERS = (
    ("ACME Medical", "Tomo 64"),
    ("Northwind Imaging", "CT-Vista 128"),
    ("Contoso Health", "Helix S"),
)
ORIENTATION_NAMES = ("axial", "coronal", "sagittal", "oblique")
ORGAN_LABELS = {1: "liver", 2: "kidney"}
WINDOW = (40, 400)
_SYNTAXES = {
    "ExplicitVRLittleEndian": "1.2.840.10008.1.2.1",
    "ImplicitVRLittleEndian": "1.2.840.10008.1.2",
    "DeflatedExplicitVRLittleEndian": "1.2.840.10008.1.2.1.99",
    "RLELossless": "1.2.840.10008.1.2.5",
    "JPEGLSLossless": "1.2.840.10008.1.2.4.80",
    "JPEG2000Lossless": "1.2.840.10008.1.2.4.90",
}


@dataclass(frozen=True, eq=False)
class SeriesInfo:
    """What ``write_ct_series`` wrote.

    Fields:
        folder: the series folder; files: the slice files in array order (the missing slice
            left out); localizer_file: the localizer instance, or None.
        series_uid / study_uid / frame_of_reference_uid / patient_id / patient_name / scanner.
        orientation: axial / coronal / sagittal / oblique; lesion: whether a lesion was drawn.
        shape / spacing: (z, y, x) of the full grid; affine: its voxel (k, j, i) -> LPS matrix.
        hu: (z, y, x) float32 HU of the full grid (integers, as stored + rescale).
        labels: (z, y, x) uint8 organ labels (``ORGAN_LABELS``), or None when ``organs=False``.
        missing_slice: the grid index not written (``gap=True``), or None.
        mask_path: the NIfTI label file written, or None; transfer_syntax: the UID used.
    """

    folder: Path
    files: tuple[Path, ...]
    localizer_file: Path | None
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    scanner: tuple[str, str]
    orientation: str
    lesion: bool
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    hu: np.ndarray
    labels: np.ndarray | None
    missing_slice: int | None
    mask_path: Path | None
    transfer_syntax: str


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ rz


def cosines(orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """(row cosine, column cosine) in LPS of an orientation name.

    Raises:
        InvalidInputError: ``bad-option`` for an unknown name.
    """
    if orientation == "axial":
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    if orientation == "coronal":
        return np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    if orientation == "sagittal":
        return np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    if orientation == "oblique":
        rot = _rotation(np.deg2rad(25.0), np.deg2rad(15.0))
        return rot[:, 0], rot[:, 1]
    raise InvalidInputError("unknown orientation", expected=", ".join(ORIENTATION_NAMES),
                            found=str(orientation), code="bad-option")


def grid_affine(shape: Sequence[int], spacing: Sequence[float], orientation: str,
                center: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The voxel (k, j, i) -> LPS affine of a grid centred on ``center`` (mm)."""
    row, col = cosines(orientation)
    normal = np.cross(row, col)
    aff = np.eye(4)
    aff[:3, 0] = normal * spacing[0]
    aff[:3, 1] = col * spacing[1]
    aff[:3, 2] = row * spacing[2]
    aff[:3, 3] = np.asarray(center, float) - aff[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return aff


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS) affine of an array stored as ``labels.transpose(2, 1, 0)`` (x, y, z)."""
    perm = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine @ perm


def _ellipsoid(u: tuple[np.ndarray, ...], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    return sum(((u[a] - center[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0  # type: ignore[return-value]


def phantom(shape: Sequence[int], affine: np.ndarray, rng: np.random.Generator, *, lesion: bool,
            organs: bool) -> tuple[np.ndarray, np.ndarray]:
    """(HU float32, labels uint8) of the phantom on the grid ``affine`` maps to LPS.

    The phantom lives in patient coordinates scaled to the grid's bounding box (so it fills
    every field of view); HU are integers (what int16 + intercept can store).
    """
    idx = np.indices(tuple(shape), dtype=np.float32)
    lps = np.tensordot(affine[:3, :3].astype(np.float32), idx, axes=1) + affine[:3, 3, None, None, None].astype(np.float32)
    corners = np.array([[k, j, i, 1] for k in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for i in (0, shape[2] - 1)], float) @ affine.T
    mid, half = corners[:, :3].mean(0), np.ptp(corners[:, :3], axis=0) / 2 + 1e-6
    u = tuple(((lps[a] - mid[a]) / half[a]).astype(np.float32) for a in range(3))
    del lps, idx
    jit = lambda: rng.uniform(-0.04, 0.04)  # noqa: E731
    hu = np.full(tuple(shape), -1000.0, np.float32)
    labels = np.zeros(tuple(shape), np.uint8)
    body = (u[0] / (0.85 + jit())) ** 2 + (u[1] / (0.7 + jit())) ** 2 <= 1.0
    hu[body] = 20.0
    hu[body & ((u[0] / 0.85) ** 2 + (u[1] / 0.7) ** 2 > 0.8)] = -90.0  # subcutaneous fat
    hu[(u[0] / 0.12) ** 2 + ((u[1] - 0.45) / 0.12) ** 2 <= 1.0] = 650.0  # spine
    liver_c = (-0.35 + jit(), -0.05 + jit(), 0.2 + jit())
    liver_r = (0.32 * rng.uniform(0.9, 1.1), 0.32 * rng.uniform(0.9, 1.1), 0.42 * rng.uniform(0.9, 1.1))
    if organs:
        liver = _ellipsoid(u, liver_c, liver_r)
        hu[liver], labels[liver] = 60.0, 1
        for side in (-1.0, 1.0):
            kidney = _ellipsoid(u, (side * 0.4 + jit(), 0.3 + jit(), -0.25 + jit()), (0.14, 0.13, 0.25))
            hu[kidney], labels[kidney] = 32.0, 2
    if lesion:
        off = rng.uniform(-0.4, 0.4, 3) * np.asarray(liver_r)
        hu[_ellipsoid(u, np.asarray(liver_c) + off, (0.12, 0.12, 0.14))] = 180.0
    hu += rng.normal(0.0, 10.0, hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.float32), labels


def _syntax(transfer_syntax: str) -> str:
    uid = _SYNTAXES.get(transfer_syntax, transfer_syntax)
    if uid not in _SYNTAXES.values():
        raise InvalidInputError("unsupported transfer syntax for synthetic series", code="bad-option",
                                expected=", ".join(_SYNTAXES), found=str(transfer_syntax))
    return uid


def _base_dataset(info: dict[str, Any]) -> Any:
    """The attributes every instance of the series shares."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyInstanceUID, ds.SeriesInstanceUID = info["study_uid"], info["series_uid"]
    ds.FrameOfReferenceUID = info["for_uid"]
    ds.PatientName, ds.PatientID = info["patient_name"], info["patient_id"]
    ds.PatientBirthDate, ds.PatientSex, ds.PatientPosition = "19700101", "O", "HFS"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID, ds.AccessionNumber = "1", f"ACC{info['patient_index']:05d}"
    ds.Modality, ds.BodyPartExamined, ds.KVP = "CT", "ABDOMEN", 120
    ds.Manufacturer, ds.ManufacturerModelName = info["scanner"]
    ds.SeriesNumber, ds.AcquisitionNumber = info["series_index"] + 1, 1
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleType = 1, "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    return ds


_UNCOMPRESSED = {"1.2.840.10008.1.2.1": False, "1.2.840.10008.1.2": True}  # UID -> implicit VR


def encode_elements(ds: Any, implicit: bool) -> dict[int, bytes]:
    """Each data element of ``ds`` encoded little endian (as ``dcmwrite`` writes it), by tag."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    out = {}
    for elem in ds:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_data_element(fp, elem)
        out[int(elem.tag)] = fp.getvalue()
    return out


def _varying(image: np.ndarray, *, sop_uid: str, instance: int,
             geometry: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]],
             intercept: int, image_type: Sequence[str]) -> tuple[Any, np.ndarray]:
    """The per-instance elements (no pixel data) and the stored int16 pixels."""
    from pydicom.dataset import Dataset

    row, col, ipp, spacing = geometry
    ds = Dataset()
    ds.SOPInstanceUID, ds.InstanceNumber = sop_uid, instance
    ds.ImageType = list(image_type)
    ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row, *col)]
    ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
    ds.SliceThickness, ds.PixelSpacing = spacing[0], [spacing[1], spacing[2]]
    ds.SliceLocation = round(float(np.dot(ipp, np.cross(row, col))), 6)
    ds.Rows, ds.Columns = image.shape
    ds.RescaleIntercept = intercept
    return ds, np.clip(image - intercept, -32768, 32767).astype(np.int16)


def _meta(sop_uid: str, syntax: str) -> Any:
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    return meta


def _write_instance(path: Path, base: Any, image: np.ndarray, *, sop_uid: str, instance: int,
                    geometry: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]],
                    intercept: int, image_type: Sequence[str], syntax: str,
                    common: dict[int, bytes] | None = None) -> None:
    """One instance: ``image`` HU (rows, cols) stored as int16 with ``intercept``.

    ``common``: ``encode_elements(base)`` for an uncompressed syntax: then the file is assembled
    from the pre-encoded shared elements and this instance's own (the bytes ``save_as`` writes,
    several times faster); otherwise pydicom writes (and compresses) the whole dataset.
    Raises:
        InvalidInputError: ``bad-option`` (the encoder refuses the image).
    """
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    varying, stored = _varying(image, sop_uid=sop_uid, instance=instance, geometry=geometry,
                               intercept=intercept, image_type=image_type)
    if common is not None:
        varying.add_new(0x7FE00010, "OW", stored.tobytes())
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, _meta(sop_uid, syntax), enforce_standard=True)
        body = {**common, **encode_elements(varying, _UNCOMPRESSED[syntax])}
        path.write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + b"".join(body[t] for t in sorted(body)))
        return
    ds = FileDataset(str(path), base.copy(), file_meta=_meta(sop_uid, syntax), preamble=b"\0" * 128)
    ds.update(varying)
    if UID(syntax).is_compressed:
        try:
            ds.compress(syntax, stored, generate_instance_uid=False)
        except (RuntimeError, ValueError) as exc:  # e.g. JPEG 2000 needs >= 32 x 32 pixels here
            raise InvalidInputError("the synthetic slice cannot be encoded", code="bad-option",
                                    expected=f"an image size the {UID(syntax).name} encoder takes",
                                    found=f"{image.shape[0]} x {image.shape[1]}: {type(exc).__name__}",
                                    fix="use larger slices or another transfer syntax") from None
    else:
        ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _localizer(hu: np.ndarray, orientation: str) -> tuple[np.ndarray, str]:
    """A projection image of the volume (same rows x columns) and an orientation at right angles."""
    proj = hu.mean(axis=1)  # (z, x)
    rows = np.linspace(0, proj.shape[0] - 1, hu.shape[1]).round().astype(int)
    return np.rint(proj[rows]).astype(np.float32), ("coronal" if orientation != "coronal" else "sagittal")


def write_ct_series(
    folder: str | os.PathLike[str],
    *,
    seed: int,
    shape: tuple[int, int, int] = (64, 96, 96),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    orientation: str = "axial",
    patient_index: int = 0,
    series_index: int = 0,
    scanner: tuple[str, str] | None = None,
    lesion: bool = False,
    gap: bool = False,
    localizer: bool | str = False,
    organs: bool = True,
    vary_rescale: bool = False,
    transfer_syntax: str = "ExplicitVRLittleEndian",
    mask_path: str | os.PathLike[str] | None = None,
) -> SeriesInfo:
    """Write one synthetic CT series as ``folder/IM<nnnn>.dcm`` (one file per slice).

    Args:
        shape, spacing: (z, y, x) voxels and mm (slice step, row spacing, column spacing).
        orientation: axial / coronal / sagittal / oblique (25 deg about L, 15 deg about S).
        scanner: (manufacturer, model); default ``SCANNERS[patient_index % 3]``.
        gap: leave out the middle slice; localizer: add a localizer instance at right angles to
            the series, ImageType ...\\LOCALIZER (True or "tagged") or without it ("untagged").
        vary_rescale: odd slices stored with intercept -1000 instead of -1024 (same HU).
        transfer_syntax: a name in ``_SYNTAXES`` or its UID.
        mask_path: also write the labels there as NIfTI (RAS affine, (x, y, z) data).
    Returns: a ``SeriesInfo``.
    Raises:
        InvalidInputError: ``bad-option`` (orientation, transfer syntax, shape).
    """
    if len(shape) != 3 or min(shape) < 1 or (gap and shape[0] < 3):
        raise InvalidInputError("invalid synthetic series shape", code="bad-option",
                                expected="(z, y, x) >= 1 (z >= 3 with a gap)", found=str(shape))
    syntax = _syntax(transfer_syntax)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, patient_index, series_index])
    affine = grid_affine(shape, spacing, orientation, center=rng.uniform(-5.0, 5.0, 3))
    hu, labels = phantom(shape, affine, rng, lesion=lesion, organs=organs)
    info = dict(patient_index=patient_index, series_index=series_index,
                scanner=scanner or SCANNERS[patient_index % len(SCANNERS)],
                patient_id=f"SYN{seed:03d}P{patient_index:04d}",
                patient_name=f"SYNTHETIC^PATIENT{patient_index}",
                study_uid=_uid(seed, patient_index, "study"),
                series_uid=_uid(seed, patient_index, series_index, "series"))
    info["for_uid"] = _uid(seed, info["study_uid"], "for")
    base = _base_dataset(info)
    common = encode_elements(base, _UNCOMPRESSED[syntax]) if syntax in _UNCOMPRESSED else None
    row, col = cosines(orientation)
    missing = shape[0] // 2 if gap else None
    files: list[Path] = []
    for k in range(shape[0]):
        if k == missing:
            continue
        path = out / f"IM{k + 1:04d}.dcm"
        _write_instance(path, base, hu[k], sop_uid=_uid(seed, info["series_uid"], k), instance=k + 1,
                        geometry=(row, col, affine[:3, 3] + k * affine[:3, 0], spacing),
                        intercept=-1000 if vary_rescale and k % 2 else -1024,
                        image_type=("ORIGINAL", "PRIMARY", "AXIAL"), syntax=syntax, common=common)
        files.append(path)
    loc_file = _write_localizer(out, base, hu, info, orientation=orientation, spacing=spacing,
                                seed=seed, syntax=syntax, localizer=localizer)
    mask = _write_mask(mask_path, labels, affine) if mask_path is not None and organs else None
    return SeriesInfo(
        folder=out, files=tuple(files), localizer_file=loc_file, series_uid=info["series_uid"],
        study_uid=info["study_uid"], frame_of_reference_uid=info["for_uid"],
        patient_id=info["patient_id"], patient_name=info["patient_name"], scanner=info["scanner"],
        orientation=orientation, lesion=lesion, shape=tuple(shape), spacing=tuple(spacing),
        affine=affine, hu=hu, labels=labels if organs else None, missing_slice=missing,
        mask_path=mask, transfer_syntax=syntax)


def _write_localizer(out: Path, base: Any, hu: np.ndarray, info: dict[str, Any], *, orientation: str,
                     spacing: tuple[float, float, float], seed: int, syntax: str,
                     localizer: bool | str) -> Path | None:
    if localizer is False:
        return None
    tagged = localizer in (True, "tagged")
    image, loc_orientation = _localizer(hu, orientation)
    row, col = cosines(loc_orientation)
    path = out / "IM0000.dcm"
    kind = ("ORIGINAL", "PRIMARY", "LOCALIZER") if tagged else ("ORIGINAL", "PRIMARY")
    _write_instance(path, base, image, sop_uid=_uid(seed, info["series_uid"], "localizer"),
                    instance=0, geometry=(row, col, np.zeros(3), spacing), intercept=-1024,
                    image_type=kind, syntax=syntax)
    return path


def _write_mask(path: str | os.PathLike[str], labels: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), nifti_affine(affine))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(p))
    return p


SPACINGS = ((2.5, 0.8, 0.8), (2.0, 0.7, 0.7), (3.0, 0.9, 0.9), (1.5, 0.75, 0.75))


def write_series_dataset(
    root: str | os.PathLike[str],
    *,
    n_series: int,
    seed: int,
    shape: tuple[int, int, int] = (64, 96, 96),
    n_patients: int | None = None,
    orientations: Sequence[str] = ORIENTATION_NAMES,
    spacings: Sequence[tuple[float, float, float]] = SPACINGS,
    lesion_fraction: float = 0.5,
    masks: bool = False,
    localizers: int = 0,
    gaps: int = 0,
    transfer_syntax: str = "ExplicitVRLittleEndian",
) -> Path:
    """Write ``n_series`` synthetic CT series as ``root/<patient_id>/S<nn>/IM*.dcm`` and
    ``root/labels.csv`` (``path,label,patient_id[,mask]``; ``path`` = the series folder relative
    to ``root``, label ``lesion`` / ``normal``).

    Args:
        n_patients: default ``ceil(n_series / 2)``; series go to patients in turn; scanners vary
            by patient, spacing and orientation by series (cycling ``spacings``/``orientations``).
        lesion_fraction: share of series with a lesion (exact count, seeded positions).
        masks: write ``root/masks/<patient_id>_S<nn>.nii.gz`` organ labels and the ``mask`` column.
        localizers / gaps: the first ``localizers`` series get a tagged localizer instance, the
            next ``gaps`` a missing slice (then ``read_series`` refuses them, ``series-gap``).
    Returns: ``root``.
    Raises:
        InvalidInputError: ``bad-option`` (n_series < 1, bad orientation or transfer syntax).
    """
    if n_series < 1 or (n_patients is not None and n_patients < 1):
        raise InvalidInputError("a synthetic dataset needs at least one series and patient",
                                code="bad-option", expected="n_series >= 1", found=str(n_series))
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    patients = n_patients or max(1, (n_series + 1) // 2)
    rng = np.random.default_rng([seed, 0x5E7])
    lesions = np.zeros(n_series, bool)
    lesions[rng.permutation(n_series)[: int(round(lesion_fraction * n_series))]] = True
    rows: list[list[str]] = []
    for s in range(n_series):
        p, nth = s % patients, s // patients
        info = write_ct_series(
            base / f"SYN{seed:03d}P{p:04d}" / f"S{nth + 1:02d}", seed=seed, shape=shape,
            spacing=tuple(spacings[s % len(spacings)]), orientation=orientations[s % len(orientations)],
            patient_index=p, series_index=nth, lesion=bool(lesions[s]), localizer=s < localizers,
            gap=localizers <= s < localizers + gaps, transfer_syntax=transfer_syntax,
            mask_path=base / "masks" / f"SYN{seed:03d}P{p:04d}_S{nth + 1:02d}.nii.gz" if masks else None)
        row = [info.folder.relative_to(base).as_posix(), "lesion" if lesions[s] else "normal",
               info.patient_id]
        rows.append(row + ([info.mask_path.relative_to(base).as_posix()] if info.mask_path else []))
    with open(base / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"] + (["mask"] if masks else []))
        w.writerows(rows)
    return base
