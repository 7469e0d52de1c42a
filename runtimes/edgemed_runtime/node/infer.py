"""``infer_series``: the one place that decides how a series is run (2D per instance or as a
volume) and what result it gives.

- 2D classification bundles: ``Session.predict`` per instance; one finding per readable
  instance, an error code per unreadable one (a corrupt slice does not sink the series).
- Volume bundles (the artifact's preprocess has ``kind == "volume"``): the series is read with
  ``read_series`` and predicted at once: class probabilities for the whole series, or a
  ``SegmentationResult`` (the caller writes it as a DICOM SEG with ``outputs.seg.seg_bytes``).
"""

from __future__ import annotations

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
    ``"segmentation"`` (``segmentation``: the label volume, written as a DICOM SEG by the
    caller); ``labels`` names the classes."""

    kind: str
    labels: tuple[str, ...]
    instances: tuple[InstanceResult, ...] = ()
    segmentation: Any = None  # a tasks.SegmentationResult on the series' grid
    errors: dict[str, int] = field(default_factory=dict)
    whole_series: bool = False  # one result for the whole series (a volume classifier)

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


def _volume(session: Session, files: Sequence[Path]) -> SeriesResult:
    from ..dicom.series import read_series
    from ..tasks import SegmentationResult

    volume = read_series(list(files))
    out = session.predict(volume)
    if isinstance(out, SegmentationResult):
        return SeriesResult("segmentation", tuple(out.label_names), segmentation=out)
    probs = np.asarray(out, dtype=np.float64).reshape(-1)
    return SeriesResult("classification", _labels(session, len(probs)),
                        (InstanceResult(0, probabilities=tuple(float(v) for v in probs)),),
                        whole_series=True)


def infer_series(session: Session, files: Sequence[Path]) -> SeriesResult:
    """Run the bundle on one series (its instance files, in the order received).

    Raises:
        InvalidInputError: a volume bundle on a series that ``read_series`` refuses (its codes).
    """
    if is_volume(session):
        return _volume(session, files)
    return _per_instance(session, files)
