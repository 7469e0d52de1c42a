"""Read a DICOM file into modality-LUT pixels plus the file's VOI window."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..preprocess import PreprocessSpec


@dataclass(frozen=True)
class DicomImage:
    """One decoded frame: pixels after the Modality LUT, and the file's first VOI window."""

    pixels: np.ndarray
    window: tuple[float, float] | None
    photometric: str


def read_image(path: str | os.PathLike[str], frame: int = 0) -> DicomImage:
    """Decode one frame of a DICOM file.

    Raises:
        InvalidInputError: the path is missing, the file is not DICOM, or it has no pixel data.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(
            "DICOM file not found", expected="an existing DICOM file", found=str(p),
            fix="check the path", code="not-found",
        )
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # pydicom raises many types on malformed input
        raise InvalidInputError(
            "file is not readable DICOM", expected="a DICOM Part 10 file",
            found=f"{p.name}: {type(exc).__name__}", fix="pass a .dcm file", code="not-dicom",
        ) from None
    if "PixelData" not in ds:
        raise InvalidInputError(
            "DICOM file has no pixel data", expected="an image object", found=p.name,
            code="no-pixel-data",
        )
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InvalidInputError(
            "cannot decode the pixel data", expected="decodable pixel data",
            found=f"{p.name}: {type(exc).__name__}",
            fix="install pylibjpeg, pylibjpeg-libjpeg and pylibjpeg-openjpeg for compressed files",
            code="decode-failed",
        ) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise InvalidInputError("frame out of range", expected=f"0..{frames - 1}", found=str(frame))
        arr = arr[frame]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        pixels = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        window = _first_window(ds)
        if photometric == "MONOCHROME1":
            pixels = pixels.max() + pixels.min() - pixels
    else:
        pixels = np.asarray(arr, dtype=np.float32)
        window = None
    return DicomImage(pixels=pixels, window=window, photometric=photometric)


def _first_window(ds: object) -> tuple[float, float] | None:
    c = getattr(ds, "WindowCenter", None)
    w = getattr(ds, "WindowWidth", None)
    if c is None or w is None:
        return None
    c = c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c
    w = w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w
    try:
        return float(c), float(w)
    except (TypeError, ValueError):
        return None


def load_input(path: str | os.PathLike[str], spec: PreprocessSpec) -> np.ndarray:
    """Read a DICOM file and apply ``spec``: the exact model input for that file (no batch dim)."""
    img = read_image(path, frame=spec.frame)
    return spec.apply(img.pixels, file_window=img.window)
