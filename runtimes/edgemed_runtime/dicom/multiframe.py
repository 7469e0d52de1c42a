"""Per-frame geometry of a DICOM instance: classic single-frame attributes, or the functional
groups of an enhanced multi-frame object (Plane Position / Plane Orientation / Pixel Measures,
per-frame first, then shared). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class FrameGeometry:
    """Where one frame sits: ``frame`` (0-based; None for a single-frame instance), its
    orientation (row cosine + column cosine, 6 numbers), position (3) and pixel spacing (row,
    column), each None when the instance does not say (or says something unreadable)."""

    frame: int | None
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    spacing: tuple[float, float] | None


def attribute(ds: Any, keyword: str) -> Any:
    """``ds.get(keyword)``, or None when the element is absent or its value does not parse
    (a corrupt header must end in a typed refusal, not in pydicom's exception)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def functional_group(ds: "Dataset", frame: int, name: str) -> "Dataset | None":
    """The first item of functional group ``name`` for ``frame``: per-frame, else shared."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame),
                            ("SharedFunctionalGroupsSequence", 0)):
        try:
            seq = ds.get(seq_name)
            if not seq or index >= len(seq):
                continue
            inner = seq[index].get(name)
        except Exception:
            continue
        if inner:
            return inner[0]
    return None


def _numbers(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        if value is None or len(value) != n:
            return None
        out = tuple(float(v) for v in value)
    except Exception:
        return None
    return out if all(np.isfinite(out)) else None


def _spacing(value: Any) -> tuple[float, float] | None:
    out = _numbers(value, 2)
    if out is None or min(out) <= 0:
        return None
    return out[0], out[1]


def frame_count(ds: "Dataset") -> int:
    """NumberOfFrames (1 when absent or unreadable)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except Exception:
        return 1


def is_enhanced(ds: "Dataset") -> bool:
    """Whether the instance describes its frames with functional groups."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def frame_geometries(ds: "Dataset") -> list[FrameGeometry]:
    """One ``FrameGeometry`` per frame of ``ds`` (a header; pixel data not needed); a value that
    does not parse counts as absent.

    A classic instance with several frames and no functional groups gets one entry per frame
    with its top-level position for each (``read_series`` then refuses the duplicates).
    """
    n = frame_count(ds)
    if not is_enhanced(ds):
        single = FrameGeometry(
            frame=None if n == 1 else 0, orientation=_numbers(attribute(ds, "ImageOrientationPatient"), 6),
            position=_numbers(attribute(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
            spacing=_spacing(attribute(ds, "PixelSpacing")))
        return [single] if n == 1 else [FrameGeometry(i, single.orientation, single.position,
                                                      single.spacing) for i in range(n)]
    out = []
    for i in range(n):
        pos = functional_group(ds, i, "PlanePositionSequence")
        ori = functional_group(ds, i, "PlaneOrientationSequence")
        meas = functional_group(ds, i, "PixelMeasuresSequence")
        out.append(FrameGeometry(
            frame=i,
            orientation=_numbers(attribute(ori, "ImageOrientationPatient") if ori is not None
                                 else attribute(ds, "ImageOrientationPatient"), 6),
            position=_numbers(attribute(pos, "ImagePositionPatient") if pos is not None
                              else None, 3),  # type: ignore[arg-type]
            spacing=_spacing(attribute(meas, "PixelSpacing") if meas is not None else attribute(ds, "PixelSpacing"))))
    return out
