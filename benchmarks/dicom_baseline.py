"""The plain pydicom + numpy pipeline the DICOM benchmark compares edgemed against."""

from __future__ import annotations

import warnings

import numpy as np

from edgemed_runtime.preprocess import resize_bilinear

SIZE = (224, 224)


def plain_pydicom(path: str) -> np.ndarray:
    """dcmread -> pixel_array (all frames) -> apply_modality_lut -> apply_voi_lut (or
    apply_color_lut) -> [0, 1] -> numpy area+bilinear resize to 224x224."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            arr = arr[0]
        if ds.PhotometricInterpretation == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            arr = arr / (255.0 if arr.dtype == np.uint8 else 65535.0)
        elif arr.ndim == 2:
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                arr = 1.0 - arr
        else:
            arr = arr / float((1 << int(ds.BitsStored)) - 1)
    return resize_bilinear(arr.astype(np.float32), SIZE)
