"""Placement: where a model-ready volume sits relative to the source volume it came from.

``VolumeSpec.apply`` returns one with the array; ``VolumeSpec.invert`` uses it to map a network
output back onto the source voxel grid. A small frozen value, JSON-serialisable (``to_dict`` /
``from_dict``), so a device can store it next to a result. numpy only.

The steps it records, in order (docs/preprocess-spec.md, "Volumes"):
1. orientation: flip the source axes in ``flips``, then permute: oriented axis ``a`` is source
   axis ``transpose[a]`` (shape ``oriented_shape``);
2. resampling: resampled voxel ``p`` reads oriented voxel ``sample @ p`` (shape
   ``resampled_shape``; ``sample`` is the identity when there is no spacing);
3. crop / pad: model voxel ``m`` is resampled voxel ``m + offset`` (shape ``shape``).
``affine`` maps a model voxel to patient LPS mm (as ``Volume.affine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidInputError
from .orient import LPS_TO_RAS

PLACEMENT_KIND = "volume-placement"
PLACEMENT_VERSION = 1


def _ints(value: Any, name: str) -> tuple[int, int, int]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise InvalidInputError(f"placement {name} must have three integers", found=repr(value)[:80],
                                code="bad-placement")
    return out  # type: ignore[return-value]


def _matrix(value: Any, name: str) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (4, 4) or not np.isfinite(m).all() or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise InvalidInputError(f"placement {name} must be an invertible 4x4 matrix",
                                found=str(m.shape), code="bad-placement")
    m.setflags(write=False)
    return m


@dataclass(frozen=True, eq=False)
class Placement:
    """What ``VolumeSpec.apply`` did to one volume (see the module docstring for each field)."""

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    flips: tuple[bool, bool, bool]
    transpose: tuple[int, int, int]
    oriented_shape: tuple[int, int, int]
    sample: np.ndarray
    resampled_shape: tuple[int, int, int]
    offset: tuple[int, int, int]
    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        for name in ("source_shape", "transpose", "oriented_shape", "resampled_shape", "offset", "shape"):
            object.__setattr__(self, name, _ints(getattr(self, name), name))
        for name in ("source_affine", "sample", "affine"):
            object.__setattr__(self, name, _matrix(getattr(self, name), name))
        flips = tuple(bool(f) for f in self.flips)
        if len(flips) != 3 or sorted(self.transpose) != [0, 1, 2]:
            raise InvalidInputError("placement flips / transpose are not an axis orientation",
                                    found=f"flips={flips}, transpose={self.transpose}",
                                    code="bad-placement")
        object.__setattr__(self, "flips", flips)
        for name in ("source_shape", "oriented_shape", "resampled_shape", "shape"):
            if min(getattr(self, name)) < 1:
                raise InvalidInputError(f"placement {name} must be positive",
                                        found=str(getattr(self, name)), code="bad-placement")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placement) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def ras_affine(self) -> np.ndarray:
        """The model grid's voxel -> RAS mm affine (MONAI's / NIfTI's convention)."""
        return LPS_TO_RAS @ self.affine

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The model grid's voxel size (mm), per model axis."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``Placement.from_dict(p.to_dict()) == p``."""
        return {
            "kind": PLACEMENT_KIND, "version": PLACEMENT_VERSION,
            "source_shape": list(self.source_shape), "source_affine": self.source_affine.tolist(),
            "flips": list(self.flips), "transpose": list(self.transpose),
            "oriented_shape": list(self.oriented_shape), "sample": self.sample.tolist(),
            "resampled_shape": list(self.resampled_shape), "offset": list(self.offset),
            "shape": list(self.shape), "affine": self.affine.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Placement":
        """Rebuild from ``to_dict`` output.

        Raises:
            InvalidInputError (``bad-placement``): another kind, a newer version, missing or
                unknown fields, or values of the wrong shape.
        """
        if not isinstance(d, Mapping) or d.get("kind") != PLACEMENT_KIND:
            raise InvalidInputError("not a volume placement", expected=f'"kind": "{PLACEMENT_KIND}"',
                                    found=str(d.get("kind") if isinstance(d, Mapping) else type(d).__name__),
                                    code="bad-placement")
        if d.get("version") != PLACEMENT_VERSION:
            raise InvalidInputError("unsupported placement version", expected=str(PLACEMENT_VERSION),
                                    found=str(d.get("version")), fix="upgrade edgemed-runtime",
                                    code="bad-placement")
        fields = set(cls.__dataclass_fields__)
        given = set(d) - {"kind", "version"}
        if given != fields:
            raise InvalidInputError("placement fields do not match", expected=", ".join(sorted(fields)),
                                    found=", ".join(sorted(given)), code="bad-placement")
        return cls(**{k: d[k] for k in fields})


def take_window(array: np.ndarray, start: tuple[int, int, int], size: tuple[int, int, int],
                fill: float = 0.0) -> np.ndarray:
    """The box ``[start, start + size)`` of the last three axes of ``array``; voxels outside the
    array are ``fill`` (a centre crop, a pad, or both). Returns a new array, ``array``'s dtype."""
    lead = array.shape[:-3]
    src = array.shape[-3:]
    if all(s == 0 for s in start) and tuple(size) == tuple(src):
        return np.ascontiguousarray(array).copy()
    out = np.full(lead + tuple(size), fill, dtype=array.dtype)
    dst_sl, src_sl = [], []
    for a in range(3):
        lo, hi = max(start[a], 0), min(start[a] + size[a], src[a])
        if hi <= lo:
            return out
        src_sl.append(slice(lo, hi))
        dst_sl.append(slice(lo - start[a], hi - start[a]))
    out[(Ellipsis, *dst_sl)] = array[(Ellipsis, *src_sl)]
    return out
