"""PreprocessSpec: the declarative pixel pipeline stored with every artifact and bundle.

Applied with numpy alone, so the device runtime computes exactly the arrays the build saw.
Input: a 2D (H, W) image already through the DICOM Modality LUT (e.g. Hounsfield units), or an
(H, W, 3) RGB image. Output: a float32 array laid out as the model expects (C, H, W).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from .errors import InvalidInputError

SPEC_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw (modality-LUT) pixels become model input.

    Fields:
        window: ``(center, width)`` VOI window that overrides the file's; ``None`` uses the
            file's VOI LUT / window if it has one, else the image's min..max.
        size: output ``(height, width)``; ``None`` keeps the image size.
        mean, std: normalisation applied after the window maps pixels to [0, 1].
        channels: 1, or 3 to replicate a grey image (RGB images are kept as 3 channels).
        layout: ``"CHW"`` (default) or ``"HWC"``.
        dtype: ``"float32"`` or ``"float16"``.
        frame: which frame of a multi-frame image to use.
    """

    window: tuple[float, float] | None = None
    size: tuple[int, int] | None = (224, 224)
    mean: float = 0.0
    std: float = 1.0
    channels: int = 1
    layout: str = "CHW"
    dtype: str = "float32"
    frame: int = 0
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise InvalidInputError("std must be positive", found=str(self.std), fix="use std=1.0")
        if self.channels not in (1, 3):
            raise InvalidInputError("channels must be 1 or 3", found=str(self.channels))
        if self.layout not in ("CHW", "HWC"):
            raise InvalidInputError("layout must be CHW or HWC", found=self.layout)
        if self.dtype not in ("float32", "float16"):
            raise InvalidInputError("dtype must be float32 or float16", found=self.dtype)
        if self.window is not None and float(self.window[1]) <= 0:
            raise InvalidInputError("window width must be positive", found=str(self.window))

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        d["size"] = list(self.size) if self.size is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        version = int(d.get("version", SPEC_VERSION))
        if version > SPEC_VERSION:
            raise InvalidInputError(
                "PreprocessSpec is newer than this runtime",
                expected=f"version <= {SPEC_VERSION}",
                found=str(version),
                fix="upgrade edgemed-runtime",
            )
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InvalidInputError(
                "unknown PreprocessSpec fields", expected=", ".join(sorted(known)),
                found=", ".join(sorted(unknown)),
            )
        kw = dict(d)
        if kw.get("window") is not None:
            kw["window"] = (float(kw["window"][0]), float(kw["window"][1]))
        if kw.get("size") is not None:
            kw["size"] = (int(kw["size"][0]), int(kw["size"][1]))
        return cls(**kw)

    # -- application ---------------------------------------------------------------------
    def apply(self, image: np.ndarray, file_window: tuple[float, float] | None = None) -> np.ndarray:
        """Turn one modality-LUT image (H, W) or (H, W, 3) into model input.

        Args:
            image: pixel values after the Modality LUT.
            file_window: the file's own (center, width), used when ``self.window`` is None.
        Returns:
            float array in ``layout`` with ``channels`` channels.
        Raises:
            InvalidInputError: the image is not 2D grey or RGB.
        """
        img = np.asarray(image)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
            raise InvalidInputError(
                "image has an unsupported shape",
                expected="(H, W) grey or (H, W, 3) RGB",
                found=str(img.shape),
            )
        img = img.astype(np.float32, copy=False)
        window = self.window if self.window is not None else file_window
        img = apply_window(img, window)
        if self.size is not None and img.shape[:2] != tuple(self.size):
            img = resize_bilinear(img, self.size)
        img = (img - np.float32(self.mean)) / np.float32(self.std)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[-1] == 1 and self.channels == 3:
            img = np.repeat(img, 3, axis=-1)
        elif img.shape[-1] == 3 and self.channels == 1:
            img = img.mean(axis=-1, keepdims=True, dtype=np.float32)
        if self.layout == "CHW":
            img = np.transpose(img, (2, 0, 1))
        return np.ascontiguousarray(img, dtype=np.dtype(self.dtype))


def apply_window(img: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map pixels to [0, 1] with a linear VOI window (DICOM PS3.3 C.11.2.1.2.1), or min..max."""
    if window is None:
        lo, hi = float(img.min()), float(img.max())
        if hi <= lo:
            return np.zeros_like(img, dtype=np.float32)
        return ((img - lo) / (hi - lo)).astype(np.float32, copy=False)
    c, w = float(window[0]), float(window[1])
    # DICOM linear function: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1].
    if w <= 1:
        return (img > c - 0.5).astype(np.float32)
    out = (img - (c - 0.5)) / (w - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) to ``size`` with bilinear interpolation (half-pixel centres), numpy only.

    When shrinking by more than 2x, the image is first box-averaged by an integer factor so the
    result does not alias (what PIL/OpenCV "area" resizing would do).
    """
    oh, ow = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    fy, fx = max(1, h // (2 * oh)), max(1, w // (2 * ow))
    if fy > 1 or fx > 1:
        hh, ww = (h // fy) * fy, (w // fx) * fx
        cropped = img[:hh, :ww]
        shape = (hh // fy, fy, ww // fx, fx) + img.shape[2:]
        img = cropped.reshape(shape).mean(axis=(1, 3), dtype=np.float32)
        h, w = img.shape[:2]
    ys = (np.arange(oh, dtype=np.float32) + 0.5) * (h / oh) - 0.5
    xs = (np.arange(ow, dtype=np.float32) + 0.5) * (w / ow) - 0.5
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0).astype(np.float32)
    wx = (xs - x0).astype(np.float32)
    if img.ndim == 3:
        wy = wy[:, None, None]
        wx = wx[None, :, None]
    else:
        wy = wy[:, None]
        wx = wx[None, :]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return (top * (1 - wy) + bot * wy).astype(np.float32, copy=False)
