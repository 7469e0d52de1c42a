"""Read the pixel-transform attributes of a dataset into numpy-only transforms.

Modality LUT: a Modality LUT Sequence, else Rescale Slope/Intercept (top level, or for enhanced
multi-frame objects the frame's Pixel Value Transformation functional group). VOI: a VOI LUT
Sequence (preferred, as pydicom does), else Window Center/Width with the VOI LUT Function (top
level, or the frame's Frame VOI LUT functional group). Pixel spacing: Pixel Spacing, Imager Pixel
Spacing, or the Pixel Measures functional group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from .transforms import VOI_FUNCTIONS, ModalityLut, VoiLut

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


def _first(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return value
    try:
        return value[0] if len(value) else None
    except TypeError:
        return value


def _group_item(ds: "Dataset", frame: int, group: str) -> "Dataset | None":
    """The functional-group macro item ``group`` for ``frame`` (per-frame, else shared)."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame),
                            ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if not seq or index >= len(seq):
            continue
        inner = seq[index].get(group)
        if inner:
            return inner[0]
    return None


def _lut_table(item: "Dataset", ds: "Dataset", depth_dtype: str) -> tuple[np.ndarray, int, int]:
    desc = item.LUTDescriptor
    n = int(desc[0]) or 65536
    first = int(desc[1])
    bits = int(desc[2])
    data = item["LUTData"]
    if data.VR == "OW" or isinstance(data.value, (bytes, bytearray)):
        little = True
        try:
            little = bool(ds.original_encoding[1])
        except Exception:
            pass
        table = np.frombuffer(bytes(data.value), dtype="<u2" if little else ">u2")[:n]
    else:
        values = data.value if isinstance(data.value, (list, tuple)) else list(data.value)
        table = np.asarray(values, dtype=np.int64)
    if depth_dtype == "auto":
        table = table.astype(np.uint8 if bits <= 8 else np.uint16)
    if table.size == 0:
        raise ValueError("empty LUT")
    return table, first, bits


def modality_lut(ds: "Dataset", frame: int = 0) -> ModalityLut:
    """The Modality LUT for ``frame``.

    Raises:
        InvalidInputError: ``bad-attribute`` (unparseable rescale or LUT).
    """
    try:
        seq = ds.get("ModalityLUTSequence")
        if seq:
            table, first, _ = _lut_table(seq[0], ds, "auto")
            return ModalityLut(table=table, first_mapped=first)
        src: Any = ds
        if not ("RescaleSlope" in ds and "RescaleIntercept" in ds):
            src = _group_item(ds, frame, "PixelValueTransformationSequence")
        if src is not None and "RescaleSlope" in src and "RescaleIntercept" in src:
            slope, intercept = float(src.RescaleSlope), float(src.RescaleIntercept)
            if not (np.isfinite(slope) and np.isfinite(intercept)):
                raise ValueError("non-finite rescale")
            return ModalityLut(slope=slope, intercept=intercept)
    except Exception as exc:
        raise InvalidInputError(
            "the Modality LUT attributes are invalid", code="bad-attribute",
            expected="numeric Rescale Slope/Intercept or a valid Modality LUT Sequence",
            found=type(exc).__name__,
        ) from None
    return ModalityLut()


def voi_lut(ds: "Dataset", frame: int = 0) -> VoiLut | None:
    """The file's first VOI transform for ``frame``, or None (then min..max is used).

    Invalid VOI attributes are ignored (None) rather than failing the read: the window is a
    display hint, and a spec window can always override it.
    """
    try:
        seq = ds.get("VOILUTSequence")
        if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
            table, first, bits = _lut_table(seq[0], ds, "keep")
            if bits == 8 or 10 <= bits <= 16:
                return VoiLut(kind="table", table=table.astype(np.uint16 if bits > 8 else np.uint8),
                              first_mapped=first, bits=bits)
    except Exception:
        pass
    try:
        src: Any = ds
        if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
            src = _group_item(ds, frame, "FrameVOILUTSequence")
        if src is None or src.get("WindowCenter") is None or src.get("WindowWidth") is None:
            return None
        center = float(_first(src.WindowCenter))
        width = float(_first(src.WindowWidth))
        function = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    except Exception:
        return None
    if function not in VOI_FUNCTIONS or not (np.isfinite(center) and np.isfinite(width)):
        return None
    if (function == "LINEAR" and width < 1) or (function != "LINEAR" and width <= 0):
        return None
    return VoiLut(kind="window", center=center, width=width, function=function)


def first_window(ds: "Dataset") -> tuple[float, float] | None:
    """The first (center, width) pair, or None."""
    try:
        c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
        if c is None or w is None:
            return None
        return float(_first(c)), float(_first(w))
    except Exception:
        return None


def pixel_spacing(ds: "Dataset", frame: int = 0) -> tuple[float, float] | None:
    """(row, column) spacing in mm, or None when the file does not say."""
    candidates: list[Any] = [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    try:
        item = _group_item(ds, frame, "PixelMeasuresSequence")
        if item is not None:
            candidates.insert(0, item.get("PixelSpacing"))
    except Exception:
        pass
    for value in candidates:
        try:
            if value is not None and len(value) == 2:
                r, c = float(value[0]), float(value[1])
                if r > 0 and c > 0 and np.isfinite(r) and np.isfinite(c):
                    return r, c
        except Exception:
            continue
    return None
