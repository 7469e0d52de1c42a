"""Check one series' slices and put them in order: the geometry half of ``read_series``.

Slices are sorted along the slice normal (row cosine x column cosine) by the projection of their
Image Position (Patient); the slice step comes from the positions, never from Slice Thickness.
Every refusal is an ``InvalidInputError`` naming the series (a short tag) and the slices at fault
(index and file name), never a DICOM value.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from .multiframe import FrameGeometry

_ORIENTATION_TOL = 1e-3  # cosines
_DUPLICATE_MM = 1e-3
_LIST = 5  # slices named in a message


@dataclass(frozen=True)
class SliceSource:
    """One slice before sorting: which instance (index into the series' instances), its name
    for messages (``file`` or ``file frame n``), its SOP identity and its geometry."""

    instance: int
    name: str
    sop_class_uid: str
    sop_instance_uid: str
    rows: int
    columns: int
    samples: int
    geometry: FrameGeometry


@dataclass(frozen=True)
class SeriesPlan:
    """The checked, sorted series: slices in array order, the voxel -> LPS affine, the grid."""

    slices: tuple[SliceSource, ...]
    affine: np.ndarray
    rows: int
    columns: int


def series_tag(uid: str) -> str:
    """A short, stable name for a series in messages: ``series <8 hex of sha256(UID)>``."""
    return "series " + hashlib.sha256(uid.encode()).hexdigest()[:8]


def listing(names: Sequence[str]) -> str:
    """The first few names, then how many more."""
    head = ", ".join(names[:_LIST])
    return head + (f" and {len(names) - _LIST} more" if len(names) > _LIST else "")


def _refuse(tag: str, code: str, message: str, *, expected: str, found: str,
            fix: str | None = None) -> InvalidInputError:
    return InvalidInputError(f"{tag}: {message}", expected=expected, found=found, fix=fix, code=code)


def _check_present(tag: str, slices: Sequence[SliceSource]) -> None:
    if len(slices) < 2:
        raise _refuse(tag, "series-single", "a volume needs at least two slices",
                      expected=">= 2 slices", found=f"{len(slices)} slice ({listing([s.name for s in slices])})",
                      fix="pass the whole series, or read the file as a 2D image")
    lacking = [s.name for s in slices if s.geometry.orientation is None or s.geometry.position is None]
    if lacking:
        raise _refuse(tag, "series-geometry", "slices without a position or orientation",
                      expected="ImagePositionPatient and ImageOrientationPatient (or the plane "
                               "functional groups) on every slice",
                      found=f"{len(lacking)} without: {listing(lacking)}",
                      fix="this is not a volume (e.g. secondary captures); read the files one by one")
    for s in slices:
        o = np.asarray(s.geometry.orientation)
        row, col = o[:3], o[3:]
        if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
                or abs(float(row @ col)) > 1e-2):
            raise _refuse(tag, "series-geometry", "an image orientation is not two unit, orthogonal cosines",
                          expected="|row| = |col| = 1, row . col = 0", found=s.name)


def _majority(values: Sequence[Any]) -> Any:
    """The most common value (the first seen among equals)."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _check_orientation(tag: str, slices: Sequence[SliceSource]) -> np.ndarray:
    """The series' orientation (6 cosines); refuses slices that differ from the majority."""
    keys = [tuple(np.round(np.asarray(s.geometry.orientation), 3)) for s in slices]
    ref_key = _majority(keys)
    ref = np.asarray(next(s.geometry.orientation for s, k in zip(slices, keys) if k == ref_key))
    odd = [s.name for s in slices
           if np.max(np.abs(np.asarray(s.geometry.orientation) - ref)) > _ORIENTATION_TOL]
    if odd:
        raise _refuse(tag, "series-orientation", "slices with a different orientation are mixed in",
                      expected="one ImageOrientationPatient for every slice",
                      found=f"{len(odd)} of {len(slices)} differ: {listing(odd)}",
                      fix="drop the localizer / scout images (ImageType LOCALIZER is dropped "
                          "automatically), or pass a SeriesFilter that picks one series")
    return ref


def _check_shape(tag: str, slices: Sequence[SliceSource]) -> tuple[int, int, tuple[float, float]]:
    """(rows, columns, pixel spacing) shared by every slice, else ``series-shape``."""
    keys = [(s.rows, s.columns, s.samples, tuple(np.round(s.geometry.spacing, 4))
             if s.geometry.spacing else None) for s in slices]
    ref = _majority(keys)
    odd = [s.name for s, k in zip(slices, keys) if k != ref]
    if odd:
        rows, cols, _, spacing = ref
        raise _refuse(tag, "series-shape", "slices of different sizes or pixel spacing",
                      expected=f"{rows} x {cols} pixels, spacing {spacing} mm on every slice",
                      found=f"{len(odd)} of {len(slices)} differ: {listing(odd)}",
                      fix="pass one series of one acquisition; resample the odd slices")
    if ref[2] != 1:
        raise _refuse(tag, "series-shape", "a volume needs one sample per pixel (grey images)",
                      expected="SamplesPerPixel 1", found=f"SamplesPerPixel {ref[2]}")
    if ref[3] is None:
        raise _refuse(tag, "series-geometry", "the slices have no pixel spacing",
                      expected="PixelSpacing (or the Pixel Measures functional group)",
                      found="absent", fix="this is not a volume; read the files one by one")
    spacing = next(s.geometry.spacing for s in slices if s.geometry.spacing)
    return ref[0], ref[1], spacing  # type: ignore[return-value]


def _check_steps(tag: str, ordered: Sequence[SliceSource], proj: np.ndarray,
                 tolerance: float) -> float:
    """The mean slice step (mm); refuses duplicate positions and non-uniform steps."""
    steps = np.diff(proj)
    dup = [f"slices {k} and {k + 1} ({ordered[k].name}, {ordered[k + 1].name})"
           for k in np.flatnonzero(steps < _DUPLICATE_MM)]
    if dup:
        raise _refuse(tag, "series-duplicate", "several slices at the same position",
                      expected="one slice per position", found=f"{len(dup)} pairs: {listing(dup)}",
                      fix="the folder holds repeated or several acquisitions (echoes, phases) of "
                          "one series; keep one")
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > tolerance * median)
    if bad.size:
        odd = [f"{steps[k]:.3g} mm between slice {k} ({ordered[k].name}) and {k + 1} "
               f"({ordered[k + 1].name})" for k in bad]
        raise _refuse(tag, "series-gap", "slices are missing or unevenly spaced",
                      expected=f"a step of {median:.4g} mm (+/- {100 * tolerance:g}%)",
                      found=listing(odd), fix="find the missing slices, or raise spacing_tolerance to "
                                                "accept uneven steps (the volume then uses the mean step)")
    return float((proj[-1] - proj[0]) / (len(proj) - 1))


def _check_stack(tag: str, ordered: Sequence[SliceSource], normal: np.ndarray, step: float,
                 tolerance: float) -> None:
    """Refuse positions that drift across the slice plane (e.g. a tilted gantry)."""
    pos = np.array([s.geometry.position for s in ordered], float)
    along = (pos - pos[0]) @ normal
    drift = np.linalg.norm(pos - pos[0] - along[:, None] * normal, axis=1)
    bad = np.flatnonzero(drift > max(tolerance * step, 1e-2))
    if bad.size:
        raise _refuse(tag, "series-geometry", "slice positions are not stacked along the slice normal",
                      expected="positions on a line along row x column cosine (no gantry tilt)",
                      found=f"{bad.size} slices off the line: "
                            f"{listing([f'{k} ({ordered[k].name})' for k in bad])}",
                      fix="resample the tilted series (e.g. dcm2niix's gantry tilt correction)")


def plan_series(uid: str, slices: Sequence[SliceSource], tolerance: float) -> SeriesPlan:
    """Check ``slices`` (one series) and sort them.

    Returns: a ``SeriesPlan``: slices ascending along the normal; affine columns
    k = normal * step, j = column cosine * PixelSpacing[0], i = row cosine * PixelSpacing[1],
    translation = the first slice's position.
    Raises:
        InvalidInputError: ``series-single``, ``series-geometry``, ``series-orientation``,
            ``series-shape``, ``series-duplicate``, ``series-gap``.
    """
    tag = series_tag(uid)
    _check_present(tag, slices)
    iop = _check_orientation(tag, slices)
    rows, cols, spacing = _check_shape(tag, slices)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    proj = np.array([float(np.dot(s.geometry.position, normal)) for s in slices])
    order = np.argsort(proj, kind="stable")
    ordered = [slices[k] for k in order]
    step = _check_steps(tag, ordered, proj[order], tolerance)
    _check_stack(tag, ordered, normal, step, tolerance)
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col * spacing[0]
    affine[:3, 2] = row * spacing[1]
    affine[:3, 3] = ordered[0].geometry.position
    return SeriesPlan(tuple(ordered), affine, rows, cols)
