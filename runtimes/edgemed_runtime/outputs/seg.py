"""DICOM SEG from a label volume (binary) or per-label probabilities (fractional), with highdicom.

One segment per label 1..K with its description (see ``segments``), referencing the source
series' SOP instances and Frame of Reference; empty frames omitted; frame ``i`` of the SEG derived
from, and positioned at, the source slice it came from (see ``seg_source``). The dataset carries
the source's patient and study modules, as a SEG must: ``seg_bytes`` keeps it in memory, and the
caller encrypts or sends it (on a device nothing with PHI touches disk in plaintext).
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidInputError
from ..util import atomic_write_bytes
from ..volume import Volume
from .checks import label_array, probability_array
from .deps import require
from .seg_source import seg_source

SegmentCodes = tuple[Any, Any]
"""(category, type) pydicom ``Code`` s of one segment (``segments.py``; pydicom is imported
only when a SEG is written, so importing the runtime does not import it)."""

MAX_FRACTIONAL = 255


def seg_dataset(labels: np.ndarray, source: Volume, *, label_names: tuple[str, ...],
                algorithm: tuple[str, str], probabilities: np.ndarray | None = None,
                codes: Mapping[str, SegmentCodes] | None = None, series_number: int = 900,
                series_description: str = "edgemed segmentation", manufacturer: str = "edgemed",
                model_name: str = "edgemed_runtime", software_version: str | None = None,
                device_serial: str = "edgemed-device", series_uid: str | None = None,
                sop_uid: str | None = None) -> Any:
    """A DICOM Segmentation (a ``pydicom.Dataset``, highdicom ``Segmentation``) for ``source``.

    Args:
        labels: (z, y, x) integer labels on ``source``'s grid, 0 = background, 1..K named.
        source: the Volume the labels were computed on, from a DICOM series (``read_series``).
        label_names: the names of labels 1..K (the segment labels).
        algorithm: (name, version) of the model, recorded per segment.
        probabilities: (K, z, y, x) floats in [0, 1]: a FRACTIONAL (probability, 8-bit) SEG of
            these instead of a BINARY SEG of ``labels``.
        codes: label name -> (category, type) pydicom Codes; defaults in ``segments``.
        series_number, series_description, manufacturer, model_name, software_version
            (default: the runtime's version), device_serial: the SEG's series and equipment.
        series_uid, sop_uid: fixed UIDs (e.g. derived for idempotent delivery); new ones if None.

    Raises:
        InvalidInputError: ``seg-no-source``, ``seg-no-frame-of-reference``, ``seg-geometry``,
            ``mask-grid``, ``bad-labels``, ``bad-label-names``, ``bad-algorithm``,
            ``bad-probabilities``, ``seg-failed`` (highdicom refused the inputs).
        MissingDependencyError: highdicom is not installed.
    """
    hd = require("highdicom")
    from .segments import check_label_names, segment_descriptions

    names = check_label_names(label_names)
    arr = label_array(labels, source, count=len(names))
    probs = None if probabilities is None else probability_array(probabilities, source, len(names))
    src = seg_source(source)
    descriptions = segment_descriptions(hd, names, algorithm, codes)
    if probs is None:
        pixels, kind = arr[src.order], hd.seg.SegmentationTypeValues.BINARY
    else:
        pixels, kind = np.moveaxis(probs, 0, -1)[src.order], hd.seg.SegmentationTypeValues.FRACTIONAL
    if software_version is None:
        from .. import __version__ as software_version
    try:
        return hd.seg.Segmentation(
            source_images=list(src.images), pixel_array=pixels, segmentation_type=kind,
            segment_descriptions=descriptions, series_instance_uid=series_uid or hd.UID(),
            series_number=int(series_number), sop_instance_uid=sop_uid or hd.UID(),
            instance_number=1, manufacturer=manufacturer, manufacturer_model_name=model_name,
            software_versions=str(software_version), device_serial_number=device_serial,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            max_fractional_value=MAX_FRACTIONAL, series_description=series_description,
            content_label="SEGMENTATION", content_description=series_description[:64],
            omit_empty_frames=True)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # highdicom's messages may quote header values: only the type and a missing keyword go out
        raise InvalidInputError(
            "highdicom cannot build a segmentation from this source and result", code="seg-failed",
            expected="a single-frame or multi-frame image series highdicom accepts as a SEG source",
            found=_exception_kind(exc), fix="check the source series' image and geometry modules") from None


def _exception_kind(exc: BaseException) -> str:
    """The exception's type, and the attribute keyword when one is missing (never a value)."""
    missing = re.search(r"has no attribute '(\w+)'", str(exc)) if isinstance(exc, AttributeError) else None
    return f"{type(exc).__name__}: missing {missing.group(1)}" if missing else type(exc).__name__


def seg_bytes(labels: np.ndarray, source: Volume, **options: Any) -> bytes:
    """The SEG of ``seg_dataset(labels, source, **options)`` as DICOM Part-10 bytes, in memory.

    Raises:
        InvalidInputError: as ``seg_dataset``; ``seg-failed`` when pydicom cannot encode it.
        MissingDependencyError: highdicom is not installed.
    """
    ds = seg_dataset(labels, source, **options)
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidInputError("the segmentation cannot be encoded as DICOM", code="seg-failed",
                                found=type(exc).__name__) from None
    return buf.getvalue()


def write_seg(path: str, labels: np.ndarray, source: Volume, **options: Any) -> None:
    """Write ``seg_bytes(labels, source, **options)`` to ``path`` atomically (host side, tests).

    Raises:
        InvalidInputError: as ``seg_bytes``; ``output-not-writable`` (the folder cannot be written).
        MissingDependencyError: highdicom is not installed.
    """
    data = seg_bytes(labels, source, **options)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise InvalidInputError("cannot write the segmentation", code="output-not-writable",
                                found=type(exc).__name__, fix="choose a writable folder") from None
