"""VolumeSpec: the declarative volume pipeline (PreprocessSpec format version 3, ``"kind": "volume"``).

Applied with numpy alone on the device. Steps, in MONAI's usual order (docs/preprocess-spec.md,
"Volumes (spec version 3)"): orientation to ``axcodes`` (MONAI ``Orientation``), resampling to
``spacing`` (MONAI ``Spacing``), intensity range scaling (MONAI ``ScaleIntensityRange``), centre
crop / pad to ``size`` (MONAI ``ResizeWithPadOrCrop``), channels, dtype. ``invert`` maps a
network output back onto the source voxel grid (MONAI ``Invertd``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidInputError
from .core import Volume
from .orient import LPS_TO_RAS, axcodes_ornt, io_orientation, ornt_affine, ornt_transform, reorient, \
    transpose_of, unorient
from .placement import Placement, take_window
from .resample import is_identity, resample, spacing_grid

VOLUME_SPEC_VERSION = 3
VOLUME_KIND = "volume"
_MODES = ("linear", "nearest")


def _bad(message: str, found: Any, expected: str | None = None) -> InvalidInputError:
    return InvalidInputError(message, expected=expected, found=repr(found)[:120], code="bad-volume-spec")


def _floats(value: Any, n: int, name: str) -> tuple[float, ...]:
    """``n`` finite numbers (not strings or booleans) as floats, else ``bad-volume-spec``."""
    try:
        numbers = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                      for v in value)
        out = tuple(float(v) for v in value) if numbers else ()
    except TypeError:
        out = ()
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise _bad(f"{name} must be {n} finite numbers", value)
    return out


def _shape3(values: Any) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in values)
    return a, b, c


def _flags(values: Any) -> tuple[bool, bool, bool]:
    a, b, c = (bool(v) for v in values)
    return a, b, c


def _finite(arr: np.ndarray, slab: int = 8) -> bool:
    """Whether every voxel is finite, checked ``slab`` slices at a time (no volume-sized mask)."""
    return all(bool(np.isfinite(arr[i:i + slab]).all()) for i in range(0, max(1, len(arr)), slab))


def _grid(shape: Any, affine: Any) -> tuple[tuple[int, int, int], np.ndarray]:
    """A source grid checked: three positive sizes and a finite invertible 4x4 affine."""
    try:
        src = _shape3(shape)
        aff = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError):
        src, aff = (0, 0, 0), np.zeros(0)
    if min(src) < 1 or aff.shape != (4, 4) or not np.isfinite(aff).all() \
            or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise InvalidInputError("not a 3D grid", expected="three positive sizes and an invertible "
                                "4x4 voxel-to-LPS affine", found=f"shape {np.shape(shape)}, affine "
                                f"{aff.shape}", code="bad-volume")
    return src, aff


@dataclass(frozen=True)
class VolumeSpec:
    """How a ``Volume`` (z, y, x, modality units, LPS affine) becomes model input (C, *spatial).

    Fields:
        axcodes: orient to these axis codes (nibabel semantics on the RAS affine, as MONAI's
            ``Orientation(axcodes)``): ``"RAS"`` puts the array's first axis along R..., the
            output axes are in axcodes order. ``None`` keeps the source's axes.
        spacing: target voxel size (mm) per output axis (MONAI ``Spacing(pixdim)``, bilinear);
            ``None`` keeps the grid.
        intensity: ``(a_min, a_max, b_min, b_max)`` of MONAI ``ScaleIntensityRange``: maps
            ``a_min..a_max`` linearly to ``b_min..b_max``; ``None`` keeps the values.
        clip: clip the scaled values to ``b_min..b_max`` (with ``intensity``).
        size: centre crop / pad to this spatial size (MONAI ``ResizeWithPadOrCrop``).
        pad_value: value of padded voxels; ``None``: ``b_min`` with ``intensity``, else 0.
        channels: the grey volume repeated this many times in the channel axis.
        dtype: ``"float32"`` or ``"float16"``.
        interpolation: ``"linear"`` (trilinear) or ``"nearest"`` for the image.
        version: the spec format version (3).
    """

    axcodes: str | None = "RAS"
    spacing: tuple[float, float, float] | None = None
    intensity: tuple[float, float, float, float] | None = None
    clip: bool = True
    size: tuple[int, int, int] | None = None
    pad_value: float | None = None
    channels: int = 1
    dtype: str = "float32"
    interpolation: str = "linear"
    version: int = VOLUME_SPEC_VERSION

    def __post_init__(self) -> None:
        if self.axcodes is not None:
            axcodes_ornt(self.axcodes)
            object.__setattr__(self, "axcodes", str(self.axcodes).upper())
        if self.spacing is not None:
            spacing = _floats(self.spacing, 3, "spacing")
            if min(spacing) <= 0:
                raise _bad("spacing must be positive", self.spacing)
            object.__setattr__(self, "spacing", spacing)
        if self.intensity is not None:
            a_min, a_max, b_min, b_max = _floats(self.intensity, 4, "intensity")
            if a_min == a_max or not b_min < b_max:
                raise _bad("intensity needs a_min != a_max and b_min < b_max", self.intensity,
                           expected="(a_min, a_max, b_min, b_max)")
            object.__setattr__(self, "intensity", (a_min, a_max, b_min, b_max))
        if self.size is not None:
            size = tuple(int(v) for v in _floats(self.size, 3, "size"))
            if min(size) < 1 or size != tuple(float(v) for v in self.size):
                raise _bad("size must be three positive integers", self.size)
            object.__setattr__(self, "size", size)
        if self.pad_value is not None:
            object.__setattr__(self, "pad_value", _floats((self.pad_value,), 1, "pad_value")[0])
        if not isinstance(self.clip, bool):
            raise _bad("clip must be true or false", self.clip)
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise _bad("channels must be a positive integer", self.channels)
        if self.dtype not in ("float32", "float16"):
            raise _bad("dtype must be float32 or float16", self.dtype)
        if self.interpolation not in _MODES:
            raise _bad("interpolation must be linear or nearest", self.interpolation)
        if self.version != VOLUME_SPEC_VERSION:
            raise _bad("unsupported volume spec version", self.version, expected=str(VOLUME_SPEC_VERSION))

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``"kind": "volume"``; ``from_dict(to_dict())`` is the same spec."""
        d: dict[str, Any] = {"kind": VOLUME_KIND, **asdict(self)}
        for name in ("spacing", "intensity", "size"):
            d[name] = list(d[name]) if d[name] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VolumeSpec":
        """Rebuild a spec from ``to_dict`` output.

        Raises:
            InvalidInputError (``bad-volume-spec``): not a volume spec, a version this runtime
                does not know (newer: upgrade), unknown fields or invalid values.
        """
        if not isinstance(d, Mapping) or d.get("kind") != VOLUME_KIND:
            raise _bad("not a volume spec", d.get("kind") if isinstance(d, Mapping) else d,
                       expected=f'"kind": "{VOLUME_KIND}"')
        version = d.get("version", VOLUME_SPEC_VERSION)
        if not isinstance(version, int) or version != VOLUME_SPEC_VERSION:
            newer = isinstance(version, int) and version > VOLUME_SPEC_VERSION
            raise InvalidInputError("volume spec version not supported by this runtime",
                                    expected=f"version {VOLUME_SPEC_VERSION}", found=repr(version)[:40],
                                    fix="upgrade edgemed-runtime" if newer else None,
                                    code="bad-volume-spec")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known - {"kind"}
        if unknown:
            raise _bad("unknown volume spec fields", sorted(unknown), expected=", ".join(sorted(known)))
        kw = {k: v for k, v in d.items() if k != "kind"}
        for name in ("spacing", "intensity", "size"):
            if kw.get(name) is not None:
                kw[name] = tuple(kw[name])
        return cls(**kw)

    # -- geometry ------------------------------------------------------------------------
    def plan(self, shape: tuple[int, ...], affine: np.ndarray) -> Placement:
        """The model grid of a source grid (``shape`` (z, y, x), ``affine`` voxel -> LPS).

        Raises:
            InvalidInputError (``bad-volume``): not three positive sizes, or not an invertible
                4x4 affine.
        """
        src, aff = _grid(shape, affine)
        ras = LPS_TO_RAS @ aff
        if self.axcodes is not None:
            ornt = ornt_transform(io_orientation(ras), axcodes_ornt(self.axcodes))
        else:
            ornt = np.array([[0, 1], [1, 1], [2, 1]])
        transpose = transpose_of(ornt)
        oriented_shape = _shape3(src[t] for t in transpose)
        oriented = ras @ ornt_affine(ornt, src)
        grid, resampled_shape, sample = oriented, oriented_shape, np.eye(4)
        if self.spacing is not None:
            grid, resampled_shape = spacing_grid(oriented, oriented_shape, self.spacing)
            sample = np.linalg.solve(oriented, grid)
            if is_identity(sample, oriented_shape, resampled_shape):  # MONAI skips it too
                grid, sample = oriented, np.eye(4)
        offset, out_shape = (0, 0, 0), resampled_shape
        if self.size is not None:
            offset = _shape3(r // 2 - s // 2 if s <= r else -((s - r) // 2)
                             for r, s in zip(resampled_shape, self.size))
            out_shape = self.size
        shift = np.eye(4)
        shift[:3, 3] = offset
        return Placement(source_shape=src, source_affine=aff, flips=_flags(f < 0 for f in ornt[:, 1]),
                         transpose=_shape3(transpose), oriented_shape=oriented_shape, sample=sample,
                         resampled_shape=resampled_shape, offset=offset, shape=out_shape,
                         affine=LPS_TO_RAS @ grid @ shift)

    @property
    def fill(self) -> float:
        """The value of padded voxels (``pad_value``, else ``b_min`` or 0)."""
        if self.pad_value is not None:
            return self.pad_value
        return self.intensity[2] if self.intensity is not None else 0.0

    # -- application ---------------------------------------------------------------------
    def apply(self, volume: Volume) -> tuple[np.ndarray, Placement]:
        """Turn a ``Volume`` into model input.

        Returns:
            the (channels, *spatial) array in ``dtype`` and its ``Placement``.
        Raises:
            InvalidInputError: not a Volume (``bad-volume``), or non-finite voxels.
        """
        if not isinstance(volume, Volume):
            raise InvalidInputError("VolumeSpec.apply takes a Volume", expected="edgemed_runtime Volume",
                                    found=type(volume).__name__, code="bad-volume")
        arr = np.asarray(volume.array)
        if not np.issubdtype(arr.dtype, np.number) or not _finite(arr):
            raise InvalidInputError("the volume has non-numeric or non-finite voxels",
                                    expected="finite numbers", found=str(arr.dtype), code="bad-volume")
        place = self.plan(volume.shape, volume.affine)
        x = reorient(arr.astype(np.float32, copy=False), place.flips, place.transpose)
        if place.resampled_shape != place.oriented_shape or not np.array_equal(place.sample, np.eye(4)):
            x = resample(x, place.sample, place.resampled_shape, mode=self.interpolation)
        else:
            x = np.array(x, dtype=np.float32)  # own, contiguous copy for the in-place steps
        if self.intensity is not None:
            a_min, a_max, b_min, b_max = self.intensity
            x -= np.float32(a_min)
            x /= np.float32(a_max - a_min)
            x *= np.float32(b_max - b_min)
            x += np.float32(b_min)
            if self.clip:
                np.clip(x, np.float32(b_min), np.float32(b_max), out=x)
        if place.shape != place.resampled_shape or any(place.offset):
            x = take_window(x, place.offset, place.shape, self.fill)
        out = np.empty((self.channels,) + place.shape, dtype=np.dtype(self.dtype))
        out[...] = x
        return out, place

    def apply_labels(self, labels: Volume | np.ndarray, *, affine: np.ndarray | None = None) -> np.ndarray:
        """Bring an integer label map (z, y, x) on a source grid to the model grid (nearest).

        Args:
            labels: a ``Volume`` of integer labels, or an integer array with ``affine``.
            affine: voxel -> LPS of a bare array (e.g. the image ``Volume``'s affine).
        Returns:
            the (spatial) label array, same dtype; padded voxels are 0.
        Raises:
            InvalidInputError (``bad-labels``): not 3D integers, or an array without ``affine``.
        """
        if isinstance(labels, Volume):
            arr, affine = np.asarray(labels.array), labels.affine
        else:
            arr = np.asarray(labels)
        if affine is None or arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise InvalidInputError("labels must be a 3D integer map on a known grid",
                                    expected="a Volume of integer labels, or (z, y, x) integers with affine=",
                                    found=f"{arr.ndim}D {arr.dtype}, affine {'given' if affine is not None else 'missing'}",
                                    code="bad-labels")
        place = self.plan(arr.shape, np.asarray(affine, dtype=np.float64))
        x = reorient(arr, place.flips, place.transpose)
        x = resample(x, place.sample, place.resampled_shape, mode="nearest")
        return np.ascontiguousarray(take_window(x, place.offset, place.shape, 0))

    def invert(self, output: np.ndarray, placement: Placement, *, mode: str = "linear") -> np.ndarray:
        """Map a network output on the model grid back onto the source voxel grid.

        Args:
            output: (C', *placement.shape) (or just the spatial shape): probabilities, logits
                or labels.
            placement: what ``apply`` returned for the source volume.
            mode: ``"linear"`` (float32 out) or ``"nearest"`` (labels; dtype kept).
        Returns:
            (C', z, y, x) on the source grid (no channel axis if ``output`` had none); voxels the
            model grid did not cover (cropped away) are 0 before resampling, as MONAI's inverse
            crop pads with 0.
        Raises:
            InvalidInputError (``bad-placement``): the output's spatial shape is not the model's,
                or ``mode`` is unknown.
        """
        if not isinstance(placement, Placement) or mode not in _MODES:
            raise InvalidInputError("invert needs a Placement and mode linear or nearest",
                                    found=f"{type(placement).__name__}, mode={mode!r}", code="bad-placement")
        out = np.asarray(output)
        if out.ndim not in (3, 4) or tuple(out.shape[-3:]) != placement.shape:
            raise InvalidInputError("the output does not match the model grid",
                                    expected=f"(C, {', '.join(map(str, placement.shape))})",
                                    found=str(out.shape), code="bad-placement")
        chans = out.reshape((-1,) + placement.shape)
        result = np.empty((chans.shape[0],) + placement.source_shape,
                          dtype=np.float32 if mode == "linear" else out.dtype)
        inverse = np.linalg.inv(placement.sample)
        resampled = placement.resampled_shape != placement.oriented_shape or not np.array_equal(placement.sample, np.eye(4))
        for c in range(chans.shape[0]):  # one channel at a time: a few copies of one channel at most
            x = take_window(chans[c], _shape3(-o for o in placement.offset), placement.resampled_shape, 0)
            if resampled:
                x = resample(x, inverse, placement.oriented_shape, mode=mode)
            result[c] = unorient(x, placement.flips, placement.transpose)
        return result if out.ndim == 4 else result[0]
