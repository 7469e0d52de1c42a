"""The source series of a DICOM SEG, checked against its ``Volume``: which datasets the SEG
references, in which order its frames are given, and that every slice sits where the volume says.

highdicom maps frame ``i`` of the array it is given to ``source_images[i]`` (single-frame series)
or to frame ``i + 1`` of the one multi-frame image, and copies that image's position into the
SEG's Plane Position. A label array in another order than the headers shifts every segment by
slices in a viewer (the offset pitfall of MONAI Deploy's writer); so the order is derived here from
the volume's slice references, and each header's position is checked against the volume's affine.
Errors name slice indices and counts, never DICOM values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..volume import Volume

# a header may lie less than half a slice step from where the affine puts its slice (so it is
# nearer that slice than any other: read_series' affine tolerates 1% uneven steps)
POSITION_TOLERANCE = 0.5
# Type 2 patient / study attributes highdicom reads from the first source image: present, maybe
# empty, in DICOM; a source that omits one gets it empty (in a copy: the volume is not changed)
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
ORIENTATION_TOLERANCE = 1e-3  # 1 - cosine between the header's and the affine's directions


@dataclass(frozen=True)
class SegSource:
    """``images``: the source datasets for highdicom; ``order[i]``: the volume's z index of the
    SEG array's frame ``i``; ``frame_of_reference_uid``: the one FoR of the series."""

    images: tuple[Any, ...]
    order: np.ndarray
    frame_of_reference_uid: str


def seg_source(source: Volume) -> SegSource:
    """The checked source of a SEG written for ``source``.

    Raises:
        InvalidInputError: ``seg-no-source`` (no headers or slice references: not from DICOM),
            ``seg-no-frame-of-reference``, ``seg-geometry`` (headers and volume disagree).
    """
    if not source.headers or not source.slices:
        raise InvalidInputError(
            "a DICOM SEG needs the source DICOM series, and this volume has no DICOM headers",
            code="seg-no-source", expected="a Volume from read_series (headers and slice references)",
            found=f"{len(source.headers)} headers, {len(source.slices)} slice references",
            fix="write the result as NIfTI instead (to_nifti / edgemed_runtime.outputs.nifti_image)")
    for_uid = _frame_of_reference(source.headers)
    if len(source.headers) == 1 and source.slices[0].frame is not None:
        images, order = _multi_frame(source)
    else:
        images, order = _single_frame(source)
    _check_geometry(source, images, order)
    return SegSource(images=tuple(_completed(ds, source.spacing[0]) for ds in images), order=order,
                     frame_of_reference_uid=for_uid)


def _completed(ds: Any, slice_step: float) -> Any:
    """``ds``, or a shallow copy with the missing Type 2 attributes empty and, for a single-frame
    image without Slice Thickness, the volume's slice step (the SEG's Pixel Measures need one)."""
    missing = [kw for kw in TYPE2_COPIED if kw not in ds]
    thickness = "SliceThickness" not in ds and "PerFrameFunctionalGroupsSequence" not in ds
    if not missing and not thickness:
        return ds
    from pydicom.dataset import Dataset

    out = Dataset()  # a new element dict (copy.copy would share the source's)
    for elem in ds:
        out.add(elem)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    for kw in missing:
        setattr(out, kw, None)
    if thickness:
        out.SliceThickness = round(float(slice_step), 6)
    return out


def _frame_of_reference(headers: tuple[Any, ...]) -> str:
    """The one Frame of Reference UID all headers share."""
    uids = {str(getattr(h, "FrameOfReferenceUID", "") or "") for h in headers}
    if uids == {""} or "" in uids:
        missing = sum(1 for h in headers if not getattr(h, "FrameOfReferenceUID", ""))
        raise InvalidInputError(
            "the source series lacks a Frame of Reference UID, so a SEG cannot say where it lies",
            code="seg-no-frame-of-reference", expected="FrameOfReferenceUID in every source instance",
            found=f"missing in {missing} of {len(headers)} instances",
            fix="write NIfTI instead, or fix the series at the modality / PACS")
    if len(uids) > 1:
        raise InvalidInputError(
            "the source instances are in different Frames of Reference",
            code="seg-no-frame-of-reference", expected="one FrameOfReferenceUID",
            found=f"{len(uids)} different", fix="split the series by Frame of Reference")
    return uids.pop()


def _geometry_error(message: str, found: str) -> InvalidInputError:
    return InvalidInputError(message, code="seg-geometry", found=found,
                             expected="headers and slice references of the volume's own series",
                             fix="pass the Volume read_series returned, on its original grid")


def _single_frame(source: Volume) -> tuple[tuple[Any, ...], np.ndarray]:
    """One header per slice: the headers in the volume's slice order (matched by SOP UID)."""
    by_uid = {str(getattr(h, "SOPInstanceUID", "")): h for h in source.headers}
    if len(by_uid) != len(source.headers) or len(source.headers) != len(source.slices):
        raise _geometry_error("the volume's headers are not one per slice",
                              f"{len(source.headers)} headers for {len(source.slices)} slices")
    missing = [k for k, s in enumerate(source.slices) if s.sop_instance_uid not in by_uid]
    if missing:
        raise _geometry_error("slices have no header", f"slice indices {missing[:5]}")
    images = tuple(by_uid[s.sop_instance_uid] for s in source.slices)
    return images, np.arange(len(images))


def _multi_frame(source: Volume) -> tuple[tuple[Any, ...], np.ndarray]:
    """One multi-frame header: the SEG array in frame order, every frame once."""
    ds = source.headers[0]
    frames = [s.frame for s in source.slices]
    n_frames = int(getattr(ds, "NumberOfFrames", 0) or 0)
    uid = str(getattr(ds, "SOPInstanceUID", ""))
    if any(s.sop_instance_uid != uid for s in source.slices) or sorted(
            f or 0 for f in frames) != list(range(1, n_frames + 1)):
        raise _geometry_error("the slices are not the frames of the one multi-frame image",
                              f"{len(frames)} slices for {n_frames} frames")
    order = np.argsort(np.asarray(frames))  # order[i]: the slice holding frame i + 1
    return (ds,), order


def _position(ds: Any, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ImagePositionPatient, ImageOrientationPatient) of one image or frame, as float arrays."""
    if frame is None:
        return (np.asarray(ds.ImagePositionPatient, float),
                np.asarray(ds.ImageOrientationPatient, float))
    groups = ds.PerFrameFunctionalGroupsSequence[frame - 1]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    pos = groups.PlanePositionSequence[0].ImagePositionPatient
    orient_seq = (groups if "PlaneOrientationSequence" in groups else shared).PlaneOrientationSequence
    return np.asarray(pos, float), np.asarray(orient_seq[0].ImageOrientationPatient, float)


def _check_geometry(source: Volume, images: tuple[Any, ...], order: np.ndarray) -> None:
    """Every slice's header position is the affine's (k, 0, 0), its rows and columns the affine's
    directions, its size the volume's; raise ``seg-geometry`` at the first slice that is not."""
    aff = source.affine
    col_dir, row_dir = aff[:3, 2] / np.linalg.norm(aff[:3, 2]), aff[:3, 1] / np.linalg.norm(aff[:3, 1])
    tol = POSITION_TOLERANCE * max(source.spacing[0], 1e-3)
    for i, k in enumerate(order):
        ds = images[0] if len(images) == 1 else images[i]
        size = (int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0))
        if size != source.shape[1:]:
            raise _geometry_error("a source image's size is not the volume's",
                                  f"slice {int(k)}: {size} vs {source.shape[1:]}")
        try:
            pos, iop = _position(ds, source.slices[int(k)].frame)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            raise _geometry_error("a source image has no valid position or orientation",
                                  f"slice {int(k)}") from None
        expected = aff @ np.array([float(k), 0.0, 0.0, 1.0])
        off = float(np.linalg.norm(pos - expected[:3]))
        if iop.shape != (6,) or not np.isfinite(pos).all() or off >= tol:
            raise _geometry_error("a source image is not where the volume puts its slice",
                                  f"slice {int(k)} is {off:.3g} mm off")
        if min(float(iop[:3] @ col_dir), float(iop[3:] @ row_dir)) < 1 - ORIENTATION_TOLERANCE:
            raise _geometry_error("a source image's orientation is not the volume's",
                                  f"slice {int(k)}")
