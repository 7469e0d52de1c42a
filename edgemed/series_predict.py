"""Predict on DICOM series with a volume model: one row per series (see ``predict.py``).

A classification row carries the prediction and probabilities; a segmentation row the volume
(ml) of each label and, with ``seg_out``, the DICOM SEG file written for the series.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from edgemed_runtime import EdgemedError, SegmentationResult
from edgemed_runtime.sdk import result_row, series_folders as series_inputs


def _segmentation(row: dict[str, Any], result: SegmentationResult, folder: Path,
                  seg_out: str | os.PathLike[str] | None) -> None:
    if seg_out is not None:
        from edgemed_runtime import write_seg

        out = Path(seg_out) / f"{folder.name}.seg.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_seg(str(out), result.labels, result.source, label_names=result.label_names,
                  algorithm=("edgemed", "1"))
        row["seg"] = str(out)


def series_row(sess: Any, folder: Path, labels: list[str],
               seg_out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One series' row; an EdgemedError becomes a failed row that names the series folder."""
    row: dict[str, Any] = {"file": str(folder), "status": "ok", "prediction": None,
                           "probabilities": {}, "warnings": [], "error": None}
    try:
        result = sess.predict(folder)
        row.update(result_row(result, labels))
        if isinstance(result, SegmentationResult):
            _segmentation(row, result, folder, seg_out)
    except EdgemedError as exc:
        row.update(status="failed", error=exc.to_dict())
    return row
