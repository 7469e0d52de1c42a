"""Volume: a 3D image on its patient grid (the unit the volume pipeline works in).

A ``Volume`` is what ``edgemed_runtime.dicom.read_series`` returns and what the volume
PreprocessSpec, sliding-window inference, DICOM SEG and NIfTI writers take. numpy only.

Conventions (docs/preprocess-spec.md, "Volumes"):
- ``array`` is (z, y, x) = (slice, row, column), float32, in modality units (Rescale Slope /
  Intercept applied per slice).
- ``affine`` maps a voxel index ``(k, j, i, 1)`` of ``array`` (slice, row, column) to patient
  LPS coordinates in millimetres (DICOM's patient coordinate system).
- ``spacing`` is (z, y, x) in millimetres, the norms of the affine's first three columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidInputError


@dataclass(frozen=True)
class SliceRef:
    """Which DICOM instance (and frame, 1-based, for multi-frame) one slice came from."""

    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3D image and where it sits in the patient.

    Attributes:
        array: (z, y, x) float32 voxels in modality units.
        affine: 4x4 float64, voxel index (k, j, i) -> patient LPS mm.
        series_uid: the SeriesInstanceUID ('' when not from DICOM).
        study_uid / frame_of_reference_uid / modality: from the series' headers ('' if absent).
        slices: one ``SliceRef`` per z index, in array order (empty when not from DICOM).
        headers: the source instances' pydicom datasets without pixel data, in slice order (one
            per instance; in memory only, never written; used to write DICOM SEG / SR that
            reference the series). Not compared, not shown.
        info: non-PHI facts for reports and errors (e.g. rows, columns, slice count).
    """

    array: np.ndarray
    affine: np.ndarray
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = ""
    slices: tuple[SliceRef, ...] = ()
    headers: tuple[Any, ...] = field(default=(), repr=False)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise InvalidInputError("a volume must be 3D", expected="(z, y, x)",
                                    found=f"{arr.ndim} dimensions", code="bad-volume")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise InvalidInputError("the volume's affine is not a valid 4x4 matrix",
                                    expected="an invertible 4x4 voxel-to-LPS matrix",
                                    found=str(aff.shape), code="bad-volume")
        if self.slices and len(self.slices) != arr.shape[0]:
            raise InvalidInputError("one slice reference per slice is needed",
                                    expected=str(arr.shape[0]), found=str(len(self.slices)),
                                    code="bad-volume")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxel counts."""
        return tuple(int(d) for d in np.shape(self.array))  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(z, y, x) voxel size in mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def sop_uids(self) -> tuple[str, ...]:
        """SOP Instance UIDs in slice order (repeated for the frames of one multi-frame file)."""
        return tuple(s.sop_instance_uid for s in self.slices)

    def evolve(self, **changes: Any) -> "Volume":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    @classmethod
    def from_array(cls, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> "Volume":
        """A volume from a bare (z, y, x) array: axial, rows along +y (P), columns along +x (L),
        slices along +z (S), with the given spacing (mm) and LPS origin."""
        aff = np.eye(4)
        # column i (index order k, j, i): k -> z (S), j -> y (P), i -> x (L)
        aff[:3, :3] = np.array([[0.0, 0.0, spacing[2]], [0.0, spacing[1], 0.0], [spacing[0], 0.0, 0.0]])
        aff[:3, 3] = origin
        return cls(array=np.asarray(array, dtype=np.float32), affine=aff)
