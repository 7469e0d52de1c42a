"""``infer_series``: the one place that decides how a series is run (2D per instance or as a
volume) and what result it gives.

- 2D classification bundles: ``Session.predict`` per instance; one finding per readable
  instance, an error code per unreadable one (a corrupt slice does not sink the series).
- Volume bundles (the artifact's preprocess has ``kind == "volume"``): the series is read with
  ``edgemed_runtime.dicom.read_series`` and predicted at once; a segmentation result becomes a
  DICOM SEG with ``edgemed_runtime.outputs.seg.seg_bytes`` when that module is present.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EdgemedError, InvalidInputError
from ..session import Session


@dataclass(frozen=True)
class InstanceResult:
    """One source instance (``index`` into the series' files): its class probabilities, or
    the error code that kept it from being analysed."""

    index: int
    probabilities: tuple[float, ...] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SeriesResult:
    """What a series gave: ``kind`` is ``"classification"`` (per-instance ``instances``) or
    ``"segmentation"`` (``seg`` holds the DICOM SEG bytes); ``labels`` names the classes."""

    kind: str
    labels: tuple[str, ...]
    instances: tuple[InstanceResult, ...] = ()
    seg: bytes | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def analysed(self) -> int:
        """How many instances have a result."""
        return sum(1 for r in self.instances if r.probabilities is not None)


def is_volume(session: Session) -> bool:
    """Whether the bundle's preprocess asks for a whole volume (``kind == "volume"``)."""
    pre = session.preprocess.to_dict() if hasattr(session.preprocess, "to_dict") else {}
    return isinstance(pre, dict) and pre.get("kind") == "volume"


def _labels(session: Session, n: int) -> tuple[str, ...]:
    labels = tuple(session.labels)
    return labels if len(labels) == n else tuple(str(i) for i in range(n))


def _per_instance(session: Session, files: Sequence[Path]) -> SeriesResult:
    rows: list[InstanceResult] = []
    errors: dict[str, int] = {}
    n = 0
    for i, f in enumerate(files):
        try:
            p = session.predict(str(f))[0]
        except EdgemedError as exc:
            rows.append(InstanceResult(i, error=exc.code))
            errors[exc.code] = errors.get(exc.code, 0) + 1
            continue
        n = len(p)
        rows.append(InstanceResult(i, probabilities=tuple(float(v) for v in p)))
    return SeriesResult("classification", _labels(session, n), tuple(rows), errors=errors)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _volume(session: Session, files: Sequence[Path]) -> SeriesResult:
    dicom = importlib.import_module("edgemed_runtime.dicom")
    read_series = getattr(dicom, "read_series", None)
    if read_series is None:
        raise InvalidInputError("this runtime cannot read volumes yet", code="unsupported-model",
                                expected="edgemed_runtime.dicom.read_series",
                                found="not in this runtime", fix="update edgemed-runtime")
    volume = read_series([str(f) for f in files])
    out = np.asarray(session.predict(volume))
    if out.ndim <= 2:  # class probabilities for the whole volume
        probs = out.reshape(-1)
        return SeriesResult("classification", _labels(session, len(probs)),
                            (InstanceResult(0, probabilities=tuple(float(v) for v in probs)),))
    seg_mod = _optional("edgemed_runtime.outputs.seg")
    if seg_mod is None or not hasattr(seg_mod, "seg_bytes"):
        raise InvalidInputError("this runtime cannot write DICOM SEG yet", code="unsupported-model",
                                expected="edgemed_runtime.outputs.seg.seg_bytes",
                                found="not in this runtime", fix="update edgemed-runtime")
    seg = seg_mod.seg_bytes(out, volume, labels=tuple(session.labels))
    return SeriesResult("segmentation", tuple(session.labels), seg=seg)


def infer_series(session: Session, files: Sequence[Path]) -> SeriesResult:
    """Run the bundle on one series (its instance files, in the order received).

    Raises:
        InvalidInputError: a volume bundle on a runtime without volume support, or a volume
            that cannot be read (codes of ``read_series``).
    """
    if is_volume(session):
        return _volume(session, files)
    return _per_instance(session, files)
