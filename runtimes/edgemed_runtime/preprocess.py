"""PreprocessSpec: the declarative pixel pipeline stored with every artifact and bundle.

Applied with numpy alone (no torch, no Pillow), so the device runtime computes exactly the arrays
the build saw.
Input: a 2D (H, W) image already through the DICOM Modality LUT (e.g. Hounsfield units), or an
(H, W, 3) RGB image; or (``finish``) a display image in [0, 1] that the DICOM reader made.
Output: a float32 array laid out as the model expects (C, H, W). See docs/preprocess-spec.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from .errors import InvalidInputError

SPEC_VERSION = 2
# Fields added in version 2, with the values that reproduce version-1 behaviour exactly.
_V1_DEFAULTS: dict[str, Any] = {"spacing": None, "frames": "pick", "reduce": "off"}


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
        frame: which frame of a multi-frame image to use (negative counts from the end).
        version: the spec format version (2; version-1 dicts load with v1 behaviour).
        spacing: ``(row_mm, col_mm)``: resample to this pixel spacing (from Pixel Spacing /
            Imager Pixel Spacing), then centre-crop/pad to ``size``; ``None`` resizes directly.
        frames: ``"pick"`` uses ``frame``; ``"stack"`` puts every frame in the channel axis.
        reduce: ``"auto"`` decodes JPEG 2000 at a reduced wavelet level when the image is at
            least 2x the model input (the fast path); ``"off"`` always decodes full resolution.
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
    spacing: tuple[float, float] | None = None
    frames: str = "pick"
    reduce: str = "auto"

    def __post_init__(self) -> None:
        # normalise types so equal specs compare and serialise equal (e.g. 40 vs 40.0)
        for name, cast in (("window", float), ("size", int), ("spacing", float)):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2:
                    raise InvalidInputError(f"{name} must have two values", found=str(value))
                object.__setattr__(self, name, (cast(value[0]), cast(value[1])))
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "std", float(self.std))
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
        if self.size is not None and (int(self.size[0]) < 1 or int(self.size[1]) < 1):
            raise InvalidInputError("size must be positive", found=str(self.size))
        if self.spacing is not None:
            if self.size is None:
                raise InvalidInputError(
                    "spacing needs a size", expected="size=(h, w) with spacing",
                    found="size=None", fix="set size, or drop spacing",
                )
            if float(self.spacing[0]) <= 0 or float(self.spacing[1]) <= 0:
                raise InvalidInputError("spacing must be positive", found=str(self.spacing))
        if self.frames not in ("pick", "stack"):
            raise InvalidInputError("frames must be pick or stack", found=str(self.frames))
        if self.reduce not in ("auto", "off"):
            raise InvalidInputError("reduce must be auto or off", found=str(self.reduce))
        if self.version not in (1, SPEC_VERSION):
            raise InvalidInputError(
                "unsupported PreprocessSpec version", expected=f"1..{SPEC_VERSION}",
                found=str(self.version),
            )

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples); ``from_dict(to_dict())`` is the same spec."""
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        d["size"] = list(self.size) if self.size is not None else None
        d["spacing"] = list(self.spacing) if self.spacing is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        """Rebuild a spec from ``to_dict`` output.

        Raises:
            InvalidInputError: newer version than this runtime, or unknown fields.
        """
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
        if version == 1:
            for k, v in _V1_DEFAULTS.items():
                kw.setdefault(k, v)
        kw["version"] = version
        if kw.get("spacing") is not None:
            kw["spacing"] = (float(kw["spacing"][0]), float(kw["spacing"][1]))
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
        return self.finish(img)

    def finish(self, display: np.ndarray, pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
        """Turn a display image in [0, 1] — (H, W), (H, W, 3) or frames (F, H, W[, 3]) when
        ``frames == "stack"`` — into model input: spacing/resize, normalise, channels, layout.
        A uint8 (H, W, 3) image is 8-bit colour (0..255): resampled, then divided by 255.

        Raises:
            InvalidInputError: ``spacing`` is set but the image has no pixel spacing.
        """
        img = np.asarray(display)
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and self.version > 1:
            # 8-bit colour: resample straight from the 8-bit samples (float32), then / 255;
            # one channel wanted: the exact integer channel sum first (it commutes), / (3 * 255)
            if self.channels == 1:
                total = img[..., 0].astype(np.uint16)
                total += img[..., 1]
                total += img[..., 2]
                img = self._spatial(total, pixel_spacing) * np.float32(1.0 / 765.0)
            else:
                img = self._spatial(img, pixel_spacing) * np.float32(1.0 / 255.0)
            return self._normalise_layout(img, stacked=False)
        img = img.astype(np.float32, copy=False)
        stacked = self.frames == "stack" and (img.ndim == 4 or (img.ndim == 3 and img.shape[-1] != 3))
        if stacked:
            parts = [self._spatial(f, pixel_spacing) for f in img]
            parts = [p[..., None] if p.ndim == 2 else p for p in parts]
            img = np.concatenate(parts, axis=-1)
        else:
            grey = self.channels == 1 and img.ndim == 3 and img.shape[-1] == 3 and self.version > 1
            img = self._spatial(img, pixel_spacing, grey=grey)
        return self._normalise_layout(img, stacked)

    def finish_affine(self, stored: np.ndarray, scale: float, offset: float,
                      pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
        """``finish(stored * scale + offset)`` for a grey image whose display transform is affine
        (no VOI window), resampling first: an affine map commutes with the (linear, weights
        summing to one) resampling, so the result equals the other order up to float rounding,
        at the cost of the output size instead of the input size.
        """
        img = np.asarray(stored)
        if img.ndim != 2:
            raise InvalidInputError("finish_affine takes one grey image", found=str(img.shape))
        img = img.astype(np.float32, copy=False)
        img = self._spatial(img, pixel_spacing, affine=(float(scale), float(offset)))
        return self._normalise_layout(img, stacked=False)

    def _normalise_layout(self, img: np.ndarray, stacked: bool) -> np.ndarray:
        img = img - np.float32(self.mean) if self.mean != 0.0 else img
        if self.std != 1.0:
            img = img / np.float32(self.std)
        if img.ndim == 2:
            img = img[..., None]
        if not stacked:
            if img.shape[-1] == 1 and self.channels == 3:
                img = np.repeat(img, 3, axis=-1)
            elif img.shape[-1] == 3 and self.channels == 1:
                img = channel_mean(img)[..., None]
        if self.layout == "CHW":
            img = np.transpose(img, (2, 0, 1))
        return np.ascontiguousarray(img, dtype=np.dtype(self.dtype))

    def _resize(self, img: np.ndarray, size: tuple[int, int], grey: bool = False) -> np.ndarray:
        if self.version == 1:
            return img if img.shape[:2] == tuple(size) else resize_bilinear(img, size)
        if img.shape[:2] == tuple(size):
            return channel_mean(img) if grey else img
        return resize_area(img, size, grey=grey)

    def _spatial(self, img: np.ndarray, pixel_spacing: tuple[float, float] | None,
                 affine: tuple[float, float] | None = None, grey: bool = False) -> np.ndarray:
        """Resize / resample (+ ``affine`` display map, + ``grey``: RGB -> channel mean, taken
        between the two separable passes where the image is smallest)."""
        def mapped(x: np.ndarray) -> np.ndarray:
            if affine is None:
                return x
            out = x * np.float32(affine[0])
            out += np.float32(affine[1])
            return out

        if self.size is None:
            return mapped(channel_mean(img) if grey else img)
        size = (int(self.size[0]), int(self.size[1]))
        if self.spacing is None:
            return mapped(self._resize(img, size, grey))
        if pixel_spacing is None:
            raise InvalidInputError(
                "the image has no pixel spacing", expected="Pixel Spacing or Imager Pixel Spacing",
                found="neither", fix="use a spec without spacing", code="no-pixel-spacing",
            )
        h, w = img.shape[:2]
        nh = max(1, int(round(h * float(pixel_spacing[0]) / float(self.spacing[0]))))
        nw = max(1, int(round(w * float(pixel_spacing[1]) / float(self.spacing[1]))))
        img = self._resize(img, (nh, nw), grey)
        return crop_or_pad(mapped(img), size)


def channel_mean(img: np.ndarray) -> np.ndarray:
    """Mean of the last axis (3 colour channels) as float32, without numpy's slow reduction
    over a length-3 inner axis."""
    out = img[..., 0].astype(np.float32)
    for c in range(1, img.shape[-1]):
        out += img[..., c]
    out *= np.float32(1.0 / img.shape[-1])
    return out


def crop_or_pad(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad (H, W[, C]) to ``size`` (keeps the dtype)."""
    oh, ow = size
    h, w = img.shape[:2]
    y0, x0 = max(0, (h - oh) // 2), max(0, (w - ow) // 2)
    img = img[y0:y0 + oh, x0:x0 + ow]
    h, w = img.shape[:2]
    if (h, w) == (oh, ow):
        return img
    out = np.zeros((oh, ow) + img.shape[2:], dtype=img.dtype)
    py, px = (oh - h) // 2, (ow - w) // 2
    out[py:py + h, px:px + w] = img
    return out


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


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (taps x out) of a triangle filter whose radius is one output
    pixel in input units (at least one input pixel), centred on each output pixel."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    start = np.floor(centers - support + 0.5).astype(np.int64)
    idx = start[:, None] + np.arange(int(np.ceil(2 * support)) + 1)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs((idx + 0.5 - centers[:, None]) / support))
    w[(idx < 0) | (idx >= in_size)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    keep = np.flatnonzero(w.any(axis=0))
    idx = np.clip(idx[:, keep], 0, in_size - 1)
    return np.ascontiguousarray(idx.T), np.ascontiguousarray(w[:, keep].T.astype(np.float32))


def _resample_rows(img: np.ndarray, n_out: int) -> np.ndarray:
    """Filter axis 0 of ``img`` down/up to ``n_out`` (float32), reusing two buffers."""
    idx, w = _taps(img.shape[0], n_out)
    shape = (n_out,) + img.shape[1:]
    wshape = (n_out,) + (1,) * (img.ndim - 1)
    rows = np.empty(shape, dtype=img.dtype)
    out = np.empty(shape, dtype=np.float32)
    part = np.empty(shape, dtype=np.float32)
    np.take(img, idx[0], axis=0, out=rows)
    np.multiply(rows, w[0].reshape(wshape), out=out)
    for t in range(1, idx.shape[0]):
        np.take(img, idx[t], axis=0, out=rows)
        np.multiply(rows, w[t].reshape(wshape), out=part)
        out += part
    return out


def resize_area(img: np.ndarray, size: tuple[int, int], *, grey: bool = False) -> np.ndarray:
    """Resize (H, W[, C]) to ``size`` (float32) with a separable triangle filter widened by the
    reduction factor when shrinking (every input pixel contributes: no aliasing), numpy only
    (spec version 2). Same filter as Pillow's BILINEAR resize (agrees to ~1e-7).
    ``grey=True``: return the channel mean (taken after the first pass; it commutes)."""
    tmp = _resample_rows(img, int(size[0]))
    if grey and tmp.ndim == 3:
        tmp = channel_mean(tmp)
    tmp = np.ascontiguousarray(np.swapaxes(tmp, 0, 1))
    return np.ascontiguousarray(np.swapaxes(_resample_rows(tmp, int(size[1])), 0, 1))


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) to ``size`` with bilinear interpolation (half-pixel centres), numpy only
    (spec version 1).

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
