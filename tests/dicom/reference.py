"""The reference pipeline the tests compare edgemed against: pydicom's own functions.

``pixel_array`` -> ``apply_modality_lut`` -> ``apply_voi_lut`` (output scaled to [0, 1] with the
range pydicom maps to) -> MONOCHROME1 inversion; colour via ``pixel_array`` (YBR -> RGB) or
``apply_color_lut`` for PALETTE COLOR. Also lists pydicom's offline test files.
"""

from __future__ import annotations

import copy
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=1)
def pydicom_test_files() -> tuple[Path, ...]:
    """Every file shipped with pydicom's test data and the pydicom-data package (no downloads)."""
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    files: list[Path] = []
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".gz", ".bz2", ".txt", ".md")]
    return tuple(sorted(files))


def _with_frame_groups(ds, frame: int):
    """A copy of ``ds`` with the frame's functional-group rescale / window at the top level
    (pydicom's helpers read the top level only)."""
    out = ds
    for attr_group, keys in (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                             ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction"))):
        if all(k in ds for k in keys[:2]):
            continue
        for seq_name, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
            seq = ds.get(seq_name)
            if seq and idx < len(seq) and seq[idx].get(attr_group):
                item = seq[idx].get(attr_group)[0]
                if all(k in item for k in keys[:2]):
                    if out is ds:
                        out = copy.deepcopy(ds)
                    for k in keys:
                        if k in item:
                            setattr(out, k, item[k].value)
                    break
    return out


def reference_display(ds, arr: np.ndarray, frame: int = 0) -> np.ndarray:
    """[0, 1] display values of one decoded frame, computed with pydicom's functions."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.PhotometricInterpretation).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1 and photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return rgb.astype(np.float64) / ((1 << (16 if bits > 8 else 8)) - 1)
    if samples == 3:
        bits = int(ds.BitsStored) if arr.dtype.itemsize > 1 else min(int(ds.BitsStored), 8)
        return arr.astype(np.float64) / ((1 << bits) - 1)
    ds = _with_frame_groups(ds, frame)
    m = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    has_lut = bool(ds.get("VOILUTSequence")) and None not in (
        ds.VOILUTSequence[0].get("LUTDescriptor"), ds.VOILUTSequence[0].get("LUTData"))
    has_window = None not in (ds.get("WindowCenter"), ds.get("WindowWidth"))
    out = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if has_lut:
                v = apply_voi_lut(m, ds)
                out = v.astype(np.float64) / ((1 << int(ds.VOILUTSequence[0].LUTDescriptor[2])) - 1)
            elif has_window:
                v = apply_voi_lut(m, ds)
                y_min, y_max = _window_range(ds)
                out = (v - y_min) / (y_max - y_min)
    except (ValueError, NotImplementedError, TypeError):
        out = None  # pydicom refuses this VOI; edgemed falls back to min..max
    if out is None:
        lo, hi = float(m.min()), float(m.max())
        out = np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def _window_range(ds) -> tuple[float, float]:
    """The output range pydicom's apply_windowing maps to (copied from its rules)."""
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.PixelRepresentation) == 0:
        y_min, y_max = 0, 2 ** int(ds.BitsStored) - 1
    else:
        y_min, y_max = -(2 ** (int(ds.BitsStored) - 1)), 2 ** (int(ds.BitsStored) - 1) - 1
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return float(y_min), float(y_max)
