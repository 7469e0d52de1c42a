"""InferenceSpec: how the device runs a model over an input (whole, or in sliding windows).

Stored in ``artifact.json`` under ``"inference"`` (absent = run the whole input at once). The
fields mirror the arguments of MONAI's ``sliding_window_inference`` (docs/preprocess-spec.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..errors import InvalidInputError

SPEC_VERSION = 1
MODES = ("whole", "sliding_window")
BLENDS = ("constant", "gaussian")
PADDING_MODES = ("constant", "reflect", "replicate")
SPATIAL_RANKS = (2, 3)
MAX_ROI_SIDE = 4096
MAX_ROI_VOXELS = 2**24  # 256^3 or 4096^2: one window of one channel is at most 64 MiB in float32
MAX_SW_BATCH = 256


def _bad(message: str, *, expected: str, found: Any, code: str = "bad-inference-spec",
         fix: str | None = None) -> InvalidInputError:
    return InvalidInputError(message, expected=expected, found=repr(found)[:80], fix=fix,
                             code=code)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_roi(roi_size: Any, mode: str = "sliding_window") -> tuple[int, ...]:
    """Validate an ROI size; return it as a tuple of ints.

    Raises:
        InvalidInputError (``bad-roi``): not a sequence of 2 or 3 positive ints, a side over
            MAX_ROI_SIDE or more than MAX_ROI_VOXELS voxels (``()`` is allowed for ``whole``).
    """
    if not isinstance(roi_size, (tuple, list)) or not all(_is_int(s) for s in roi_size):
        raise _bad("roi_size must be a sequence of integers", expected="e.g. [96, 96, 96]",
                   found=roi_size, code="bad-roi")
    roi = tuple(int(s) for s in roi_size)
    if mode == "whole" and not roi:
        return roi
    if not roi:
        raise _bad("sliding_window needs a roi_size", expected="e.g. [96, 96, 96]", found=roi,
                   code="bad-roi", fix='give the window size, or mode "whole"')
    if len(roi) not in SPATIAL_RANKS:
        raise _bad("roi_size has the wrong number of spatial dimensions",
                   expected="2 (2D) or 3 (3D) sizes", found=roi, code="bad-roi")
    if any(s <= 0 for s in roi):
        raise _bad("roi_size sizes must be positive", expected="every size >= 1", found=roi,
                   code="bad-roi", fix="give the window size the model was exported with")
    if max(roi) > MAX_ROI_SIDE or math.prod(roi) > MAX_ROI_VOXELS:
        raise _bad("roi_size is larger than the runtime allows",
                   expected=f"sides <= {MAX_ROI_SIDE} and at most {MAX_ROI_VOXELS} voxels",
                   found=roi, code="bad-roi", fix="use a smaller window (e.g. 96x96x96)")
    return roi


@dataclass(frozen=True)
class InferenceSpec:
    """How to run the model over one input.

    Attributes:
        mode: ``"whole"`` (one call on the whole input) or ``"sliding_window"``.
        roi_size: the window's spatial size (2 or 3 sizes; may be ``()`` for ``whole``).
        overlap: fraction of a window shared with its neighbour, in [0, 1) (MONAI default 0.25).
        blend: ``"constant"`` (equal weights) or ``"gaussian"`` (weights fall off to the edges).
        sigma_scale: the gaussian's sigma as a fraction of the window size (> 0).
        sw_batch_size: windows per predictor call (1..MAX_SW_BATCH).
        padding_mode: how an input smaller than the window is padded: ``"constant"`` (with
            ``cval``), ``"reflect"`` or ``"replicate"`` (torch.nn.functional.pad's modes).
        cval: the fill value of ``constant`` padding (finite).
        version: the spec format version.

    Raises:
        InvalidInputError: a field out of range (codes ``bad-roi``, ``bad-overlap``,
            ``bad-inference-spec``).
    """

    mode: str = "sliding_window"
    roi_size: tuple[int, ...] = ()
    overlap: float = 0.25
    blend: str = "constant"
    sigma_scale: float = 0.125
    sw_batch_size: int = 1
    padding_mode: str = "constant"
    cval: float = 0.0
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise _bad("unknown inference mode", expected=" / ".join(MODES), found=self.mode)
        object.__setattr__(self, "roi_size", check_roi(self.roi_size, self.mode))
        if not _is_real(self.overlap) or not 0.0 <= self.overlap < 1.0:
            raise _bad("overlap must be in [0, 1)", expected="0 <= overlap < 1, e.g. 0.25",
                       found=self.overlap, code="bad-overlap")
        if self.blend not in BLENDS:
            raise _bad("unknown blend mode", expected=" / ".join(BLENDS), found=self.blend)
        if not _is_real(self.sigma_scale) or self.sigma_scale <= 0:
            raise _bad("sigma_scale must be a positive number", expected="> 0, e.g. 0.125",
                       found=self.sigma_scale)
        if not _is_int(self.sw_batch_size) or not 1 <= self.sw_batch_size <= MAX_SW_BATCH:
            raise _bad("sw_batch_size out of range", expected=f"an integer in 1..{MAX_SW_BATCH}",
                       found=self.sw_batch_size)
        if self.padding_mode not in PADDING_MODES:
            raise _bad("unknown padding mode", expected=" / ".join(PADDING_MODES),
                       found=self.padding_mode)
        if not _is_real(self.cval):
            raise _bad("cval must be a finite number", expected="e.g. 0.0", found=self.cval)
        if self.padding_mode != "constant" and self.cval != 0:
            raise _bad("cval applies to constant padding only", expected="cval 0.0 with "
                       f"padding_mode {self.padding_mode!r}", found=self.cval,
                       fix='set padding_mode "constant" or drop cval')
        if self.version != SPEC_VERSION:
            raise _bad("unsupported InferenceSpec version", expected=str(SPEC_VERSION),
                       found=self.version)
        object.__setattr__(self, "overlap", float(self.overlap))
        object.__setattr__(self, "sigma_scale", float(self.sigma_scale))
        object.__setattr__(self, "cval", float(self.cval))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (``roi_size`` as a list)."""
        d = asdict(self)
        d["roi_size"] = list(self.roi_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InferenceSpec":
        """Build a spec from ``to_dict()`` output.

        Raises:
            InvalidInputError: not a mapping, unknown fields, a newer version, bad values.
        """
        if not isinstance(d, Mapping):
            raise _bad("the inference spec must be a JSON object", expected="a mapping",
                       found=type(d).__name__)
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise _bad("unknown inference spec fields", expected=", ".join(sorted(known)),
                       found=unknown, fix="upgrade edgemed_runtime if the artifact is newer")
        version = d.get("version", SPEC_VERSION)
        if _is_int(version) and version > SPEC_VERSION:
            raise _bad("the inference spec is newer than this runtime",
                       expected=f"version <= {SPEC_VERSION}", found=version,
                       fix="upgrade edgemed_runtime")
        kw = dict(d)
        if isinstance(kw.get("roi_size"), list):
            kw["roi_size"] = tuple(kw["roi_size"])
        return cls(**kw)
