"""The DICOM grey-scale pixel transforms as numpy-only values (no pydicom needed to apply them).

``ModalityLut``: stored values -> modality values (Rescale Slope/Intercept or a Modality LUT
Sequence, PS3.3 C.11.1). ``VoiLut``: modality values -> [0, 1] (Window Center/Width with the VOI
LUT Function LINEAR / LINEAR_EXACT / SIGMOID, or a VOI LUT Sequence table, PS3.3 C.11.2), with the
output range normalised to [0, 1] instead of the display's bit depth.

``grey_pipeline`` runs modality -> VOI -> MONOCHROME1 inversion in the standard's order. For
integer stored pixels it evaluates the three steps once per possible stored value (float64) and
gathers, which gives the same numbers as evaluating them per pixel but touches each pixel once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
VOI_FUNCTIONS: tuple[str, ...] = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
# Largest stored-value range evaluated through a table (2**16 + margin for signed 16-bit).
_MAX_TABLE = 1 << 17


@dataclass(frozen=True, eq=False)
class ModalityLut:
    """Stored value -> modality value.

    Fields:
        slope, intercept: Rescale Slope / Intercept (identity by default).
        table: Modality LUT Sequence data (overrides slope/intercept when given).
        first_mapped: the stored value mapped to ``table[0]``.
    """

    slope: float = 1.0
    intercept: float = 0.0
    table: np.ndarray | None = None
    first_mapped: int = 0

    @property
    def is_identity(self) -> bool:
        return self.table is None and self.slope == 1.0 and self.intercept == 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to an array; returns float64 (or the table's dtype for a LUT)."""
        if self.table is not None:
            idx = np.clip(np.asarray(x, dtype=np.int64) - self.first_mapped, 0, len(self.table) - 1)
            return self.table[idx]
        out = np.asarray(x, dtype=np.float64) * self.slope
        out += self.intercept
        return out


@dataclass(frozen=True, eq=False)
class VoiLut:
    """Modality value -> [0, 1] display value.

    Fields:
        kind: ``"window"`` (center/width/function) or ``"table"`` (VOI LUT Sequence).
        center, width, function: the window (PS3.3 C.11.2.1.2).
        table, first_mapped, bits: the VOI LUT (LUT Descriptor: entries, first mapped, bits).
    """

    kind: Literal["window", "table"] = "window"
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    table: np.ndarray | None = field(default=None, repr=False)
    first_mapped: int = 0
    bits: int = 16

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to modality values; returns float64 in [0, 1]."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "table" and self.table is not None:
            idx = x - self.first_mapped
            idx = np.clip(np.trunc(np.maximum(idx, 0.0)), 0, len(self.table) - 1).astype(np.intp)
            return self.table[idx].astype(np.float64) / float((1 << self.bits) - 1)
        c, w = float(self.center), float(self.width)
        if self.function == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        if self.function == "LINEAR":
            c, w = c - 0.5, w - 1.0
        if w <= 0:  # a width of 1 (LINEAR) is a threshold at the centre
            return (x > c).astype(np.float64)
        lo = c - w / 2.0
        out = (x - c) / w + 0.5
        out[x <= lo] = 0.0
        out[x > c + w / 2.0] = 1.0
        return out


def window_voi(center: float, width: float, function: str = "LINEAR") -> VoiLut:
    """A window VOI; ``function`` is one of LINEAR, LINEAR_EXACT, SIGMOID."""
    return VoiLut(kind="window", center=float(center), width=float(width), function=function)


def minmax01(x: np.ndarray) -> np.ndarray:
    """Map an array linearly so its min..max becomes 0..1 (all zeros when constant)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.float32)
    out = np.asarray(x, dtype=np.float32) - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def grey_pipeline(
    stored: np.ndarray,
    modality: ModalityLut,
    voi: VoiLut | None,
    invert: bool,
) -> np.ndarray:
    """Stored grey pixels -> display values in [0, 1] (float32), in the standard's order.

    Modality LUT, then the VOI (or the modality range min..max when there is none), then the
    MONOCHROME1 inversion (``invert``).
    """
    arr = np.asarray(stored)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo < _MAX_TABLE and (hi - lo + 1) <= max(4096, arr.size):
            values = np.arange(lo, hi + 1, dtype=np.int64)
            idx = arr if lo == 0 else np.subtract(arr, lo, dtype=np.int32)
            mod = modality(values)
            if voi is None:
                if modality.table is not None:  # a LUT need not be monotonic: use the pixels
                    out = minmax01(mod[idx])
                    return np.float32(1.0) - out if invert else out
                # rescale is monotonic and lo/hi occur in the image: its range is the pixels'
                m_lo, m_hi = float(min(mod[0], mod[-1])), float(max(mod[0], mod[-1]))
                if m_hi > m_lo:
                    table = ((mod - m_lo) * (1.0 / (m_hi - m_lo))).astype(np.float32)
                else:
                    table = np.zeros(mod.shape, dtype=np.float32)
                if invert:
                    table = np.float32(1.0) - table
                return table[idx]
            table = voi(mod).astype(np.float32)
            if invert:
                table = np.float32(1.0) - table
            return table[idx]
    mod = modality(arr)
    out = minmax01(mod) if voi is None else voi(mod).astype(np.float32)
    if invert:
        out = np.float32(1.0) - out
    return out
