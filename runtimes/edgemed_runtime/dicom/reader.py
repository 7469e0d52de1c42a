"""Read a DICOM file into model input: guard -> decode -> Modality LUT -> VOI -> MONOCHROME1 ->
colour -> (PreprocessSpec) resize / spacing / normalise / layout. pydicom + numpy, no torch.

``load_input(path, spec)`` gives exactly the array a model sees for one file, on the build
machine and on the device alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EdgemedError, InvalidInputError
from ..preprocess import PreprocessSpec
from . import attributes as attrs
from .decode import decode_frame, decode_j2k_reduced, reduce_level, require_decoder
from .guard import MAX_FRAME_PIXELS, MAX_TOTAL_PIXELS, Geometry, image_geometry, read_dataset
from .quiet import quiet
from .transforms import ModalityLut, VoiLut, grey_pipeline, window_voi

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

GREY = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True, eq=False)
class DicomImage:
    """Decoded pixels of one frame (or a stack of frames) and how to display them.

    Fields:
        stored: decoded values, (H, W) grey or (H, W, 3) RGB; a leading frame axis when stacked.
        window: the file's first (center, width), or None (kept for callers of version 1).
        photometric: the file's Photometric Interpretation.
        modality: the Modality LUT (grey only).
        voi: the file's VOI transform (grey only), None for min..max.
        invert: True for MONOCHROME1 (applied after the VOI).
        spacing: (row, column) mm of ``stored`` pixels (scaled when decoded reduced), or None.
        n_frames: frames in the file.
        reduced: wavelet levels skipped by the fast path (0 = full resolution).
        colour_max: the full-scale value of colour samples (RGB / PALETTE output).
    """

    stored: np.ndarray
    window: tuple[float, float] | None
    photometric: str
    modality: ModalityLut = field(default_factory=ModalityLut)
    voi: VoiLut | None = None
    invert: bool = False
    spacing: tuple[float, float] | None = None
    n_frames: int = 1
    reduced: int = 0
    colour_max: float = 255.0

    @property
    def is_grey(self) -> bool:
        return self.stored.ndim == 2 or (self.stored.ndim == 3 and self.stored.shape[-1] != 3)

    @cached_property
    def pixels(self) -> np.ndarray:
        """Grey: values after the Modality LUT (float32). Colour: RGB samples (float32)."""
        if self.is_grey:
            return np.asarray(self.modality(self.stored), dtype=np.float32)
        return self.stored.astype(np.float32)

    def affine(self, window: tuple[float, float] | None = None) -> tuple[float, float] | None:
        """(scale, offset) with display = stored * scale + offset, when the grey display
        transform is affine (rescale, no VOI: min..max), else None."""
        if not self.is_grey or window is not None or self.voi is not None or self.stored.ndim != 2:
            return None
        if self.modality.table is not None or self.stored.size == 0:
            return None
        lo, hi = float(self.stored.min()), float(self.stored.max())
        m_lo, m_hi = sorted((self.modality.slope * lo + self.modality.intercept,
                             self.modality.slope * hi + self.modality.intercept))
        if not m_hi > m_lo:
            return (0.0, 1.0) if self.invert else (0.0, 0.0)
        scale = self.modality.slope / (m_hi - m_lo)
        offset = (self.modality.intercept - m_lo) / (m_hi - m_lo)
        return (-scale, 1.0 - offset) if self.invert else (scale, offset)

    def display(self, window: tuple[float, float] | None = None) -> np.ndarray:
        """Display values in [0, 1] (float32): the grey pipeline, or colour / full scale.

        Args:
            window: a (center, width) LINEAR window that overrides the file's VOI.
        """
        if not self.is_grey:
            out = self.stored.astype(np.float32)
            out *= np.float32(1.0 / self.colour_max)
            return out
        voi = window_voi(window[0], window[1]) if window is not None else self.voi
        return grey_pipeline(self.stored, self.modality, voi, self.invert)


def _frame_index(frame: int, n_frames: int) -> int:
    index = frame + n_frames if frame < 0 else frame
    if not 0 <= index < n_frames:
        raise InvalidInputError("frame out of range", expected=f"0..{n_frames - 1}",
                                found=str(frame), code="frame-out-of-range")
    return index


def _palette_table(ds: "Dataset", dtype: np.dtype) -> np.ndarray | None:
    """The palette expanded over every index value of ``dtype`` with pydicom's
    ``apply_color_lut`` ((levels, 3)), or None for index types too wide to expand."""
    from pydicom.pixels import apply_color_lut

    if dtype.kind != "u" or dtype.itemsize > 2:
        return None
    return apply_color_lut(np.arange(1 << (8 * dtype.itemsize), dtype=dtype), ds)


def _palette(arr: np.ndarray, ds: "Dataset", grey: bool = False) -> tuple[np.ndarray, float]:
    """PALETTE COLOR indices -> RGB (pydicom's ``apply_color_lut``) and the full-scale value.

    For images with more pixels than index values the palette is expanded once over every index
    value (same function, same numbers) and gathered. ``grey=True`` returns the mean of the three
    channels over full scale instead (float32 (H, W)), gathered from a 1-D table.
    """
    from pydicom.pixels import apply_color_lut

    try:
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        full = float((1 << (16 if bits > 8 else 8)) - 1)
        table = _palette_table(ds, arr.dtype) if (grey or arr.size >= 1 << (8 * arr.dtype.itemsize)) else None
        if grey:
            if table is None:
                rgb = apply_color_lut(arr, ds)
                return (rgb.astype(np.float32).mean(axis=-1) * np.float32(1.0 / full)), 1.0
            grey_table = (table.astype(np.float64).mean(axis=1) / full).astype(np.float32)
            return grey_table[arr], 1.0
        rgb = table[arr] if table is not None else apply_color_lut(arr, ds)
    except Exception as exc:
        raise InvalidInputError("the palette colour lookup table is invalid", code="bad-attribute",
                                expected="a valid PALETTE COLOR LUT", found=type(exc).__name__) from None
    return rgb, full


def _decode(ds: "Dataset", geo: Geometry, index: int | None, scale: float) -> tuple[np.ndarray, int]:
    if index is not None and scale >= 4.0:
        arr = decode_j2k_reduced(ds, geo, index, reduce_level(geo, scale))
        if arr is not None:
            level = int(round(np.log2(geo.rows / arr.shape[0]))) if arr.shape[0] else 0
            return arr, max(level, 1)
    return decode_frame(ds, geo, index), 0


def read_dataset_image(
    ds: "Dataset",
    frame: int | None = 0,
    *,
    scale: float = 1.0,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_total_pixels: int = MAX_TOTAL_PIXELS,
    geometry: Geometry | None = None,
) -> DicomImage:
    """Decode an already-parsed dataset (see ``read_image``); ``geometry`` if already checked."""
    geo = geometry or image_geometry(ds, max_frame_pixels=max_frame_pixels,
                                     max_total_pixels=max_total_pixels)
    require_decoder(geo.transfer_syntax)
    index = None if frame is None else _frame_index(frame, geo.frames)
    if index is None and geo.frames == 1:
        index = 0
    arr, reduced = _decode(ds, geo, index, scale)
    if index is not None and geo.frames > 1 and arr.ndim == (3 if geo.samples == 1 else 4):
        arr = arr[0]
    spacing = attrs.pixel_spacing(ds, index or 0)
    if spacing is not None and reduced:
        spacing = (spacing[0] * geo.rows / arr.shape[-2 if geo.samples == 1 else -3],
                   spacing[1] * geo.columns / arr.shape[-1 if geo.samples == 1 else -2])
    common = dict(window=attrs.first_window(ds), photometric=geo.photometric, spacing=spacing,
                  n_frames=geo.frames, reduced=reduced)
    if geo.samples == 1 and geo.photometric == "PALETTE COLOR":
        rgb, full = _palette(arr, ds)
        return DicomImage(stored=rgb, colour_max=full, **common)
    if geo.samples == 1:
        return DicomImage(stored=arr, modality=attrs.modality_lut(ds, index or 0),
                          voi=attrs.voi_lut(ds, index or 0),
                          invert=geo.photometric == "MONOCHROME1", **common)
    bits = geo.bits_stored if arr.dtype.itemsize > 1 else min(geo.bits_stored, 8)
    return DicomImage(stored=arr, colour_max=float((1 << bits) - 1), **common)


def read_image(
    path: str | os.PathLike[str],
    frame: int | None = 0,
    *,
    scale: float = 1.0,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_total_pixels: int = MAX_TOTAL_PIXELS,
) -> DicomImage:
    """Decode one frame (``frame``; negative counts from the end) or all frames (``None``).

    Args:
        path: a DICOM Part 10 file.
        frame: frame index, or None for every frame (stacked on a leading axis).
        scale: how much smaller than the image the model input is; >= 4 lets JPEG 2000 decode at
            a reduced resolution (the fast path, see ``decode.reduce_level``). 1.0 = full.
        max_frame_pixels, max_total_pixels: the pixel budget, checked before decoding.
    Raises:
        InvalidInputError: bad path / not DICOM / hostile or corrupt file (see ``guard``), no
            pixel data, frame out of range, undecodable pixels; always with a specific ``code``.
        MissingDependencyError: no decoder installed for the transfer syntax.
    """
    with reading():
        ds = read_dataset(path)
        return read_dataset_image(ds, frame, scale=scale, max_frame_pixels=max_frame_pixels,
                                  max_total_pixels=max_total_pixels)


@contextmanager
def reading() -> Iterator[None]:
    """Silence pydicom's warnings and turn whatever a hostile or corrupt file makes pydicom, numpy
    or a decoder raise (including Rust panics) into ``InvalidInputError``; ``EdgemedError`` passes.
    """
    try:
        with quiet():
            yield
    except EdgemedError:
        raise
    except RecursionError:
        raise InvalidInputError("the file is nested too deeply", code="nesting-too-deep",
                                found="RecursionError") from None
    except MemoryError:
        raise InvalidInputError("the image needs more memory than available", code="too-large",
                                found="MemoryError", fix="lower the pixel budget") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a last net: never a raw pydicom/numpy/decoder-panic exception
        raise InvalidInputError("the DICOM file cannot be read", code="corrupt",
                                expected="a well-formed DICOM image", found=type(exc).__name__) from None


def spec_scale(spec: PreprocessSpec, rows: int, cols: int, spacing: tuple[float, float] | None) -> float:
    """How much smaller the model input is than the image, for the fast path (1.0 = none)."""
    if spec.reduce != "auto" or spec.size is None:
        return 1.0
    if spec.spacing is not None:
        if spacing is None:
            return 1.0
        return min(spec.spacing[0] / spacing[0], spec.spacing[1] / spacing[1])
    return min(rows / spec.size[0], cols / spec.size[1])


def load_input(path: str | os.PathLike[str], spec: PreprocessSpec) -> np.ndarray:
    """Read a DICOM file and apply ``spec``: the exact model input for that file (no batch dim).

    Raises:
        InvalidInputError / MissingDependencyError: as ``read_image``, plus ``no-pixel-spacing``
            when ``spec.spacing`` is set and the file has none.
    """
    with reading():
        ds = read_dataset(path)
        geo = image_geometry(ds)
        scale = spec_scale(spec, geo.rows, geo.columns, attrs.pixel_spacing(ds, 0))
        frame = None if spec.frames == "stack" else spec.frame
        if (geo.photometric == "PALETTE COLOR" and geo.samples == 1 and spec.channels == 1
                and spec.frames == "pick" and spec.version > 1):
            # one channel wanted: the palette's channel mean, gathered, then resampled once
            # (the mean commutes with resampling, so this equals RGB -> resize -> mean)
            require_decoder(geo.transfer_syntax)
            index = _frame_index(spec.frame, geo.frames)
            arr = decode_frame(ds, geo, index)
            if arr.ndim == 3:
                arr = arr[0]
            grey, _ = _palette(arr, ds, grey=True)
            return spec.finish(grey, attrs.pixel_spacing(ds, index))
        img = read_dataset_image(ds, frame, scale=scale, geometry=geo)
        if not img.is_grey and img.stored.dtype == np.uint8 and img.colour_max == 255.0 \
                and spec.version > 1 and spec.frames == "pick":
            return spec.finish(img.stored, img.spacing)  # 8-bit colour: resampled from the samples
        affine = img.affine(spec.window) if spec.version > 1 and spec.frames == "pick" else None
        if affine is not None and spec.size is not None:
            return spec.finish_affine(img.stored, affine[0], affine[1], img.spacing)
        return spec.finish(img.display(spec.window), img.spacing)
