"""Index a folder of DICOM series and stream its volumes through a VolumeSpec.

Layouts (one sample per series):
- ``labels.csv`` in the root with columns ``path,label[,patient_id][,mask]``: ``path`` is a
  series folder relative to the root; ``mask`` (segmentation) a NIfTI label file relative to
  the root.
- without a CSV: every folder that directly holds DICOM files is one series (patient / study /
  series sub-folders at any depth), unlabelled.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgemed_runtime import InvalidInputError, IOSpec

from ..dicom import LabelledArrays
from ..dicom.index import dicom_files

SERIES_LAYOUTS = ("labels.csv in the folder with columns path,label[,patient_id][,mask] where "
                  "path is a series folder relative to it, or series folders (DICOM files) at "
                  "any depth for unlabelled data")


@dataclass(frozen=True)
class SeriesItem:
    """One series: its folder, label and patient (from labels.csv) and mask file (if any)."""

    folder: Path
    label: str | None = None
    patient_id: str | None = None
    mask: Path | None = None

    @property
    def name(self) -> str:
        return self.folder.name


def _read_csv(root: Path, csv_path: Path) -> list[SeriesItem]:
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        if not {"path", "label"} <= cols:
            raise InvalidInputError("labels.csv has the wrong columns", expected=SERIES_LAYOUTS,
                                    found=",".join(sorted(cols)), code="bad-labels")
        items = []
        base = root.resolve()
        for n, row in enumerate(reader, start=2):
            folder = root / row["path"]
            if base not in folder.resolve().parents or not folder.is_dir():
                raise InvalidInputError("a path in labels.csv is not a series folder inside the "
                                        "data folder", expected=SERIES_LAYOUTS, found=f"line {n}",
                                        code="bad-labels")
            mask = root / row["mask"] if row.get("mask") else None
            if mask is not None and not mask.is_file():
                raise InvalidInputError("a mask file in labels.csv does not exist",
                                        found=f"line {n}", code="bad-labels")
            items.append(SeriesItem(folder, row["label"] or None, row.get("patient_id") or None,
                                    mask))
    return items


def index_series(root: str | os.PathLike[str]) -> list[SeriesItem]:
    """The series of a data folder, in a stable order.

    Raises:
        InvalidInputError: ``not-found``, ``bad-labels`` (CSV columns, paths), ``empty``.
    """
    p = Path(root)
    if not p.is_dir():
        raise InvalidInputError("series folder not found", expected="a folder of DICOM series",
                                found=str(p), code="not-found", fix="check the path")
    if (p / "labels.csv").is_file():
        items = _read_csv(p, p / "labels.csv")
    else:
        items = [SeriesItem(d) for d in sorted({f.parent for f in dicom_files(p)})]
    if not items:
        raise InvalidInputError("no DICOM series in the folder", expected=SERIES_LAYOUTS,
                                found=str(p), code="empty")
    return items


def iter_volumes(items: list[SeriesItem], spec: Any) -> Iterator[tuple[SeriesItem, np.ndarray, Any, Any]]:
    """(item, model-ready (C, *spatial) array, placement, Volume) for each series, one at a
    time (each volume can be dropped before the next is read).

    Raises:
        InvalidInputError: a series ``read_series`` refuses (its code; the series folder named).
    """
    for item in items:
        vol = read_item(item)
        arr, placement = spec.apply(vol)
        yield item, arr, placement, vol


def read_item(item: SeriesItem) -> Any:
    """The series of ``item`` as a Volume.

    Raises:
        InvalidInputError: what ``read_series`` refuses, with the series folder named.
    """
    from edgemed_runtime import read_series

    try:
        return read_series(item.folder)
    except InvalidInputError as exc:
        raise InvalidInputError(f"series {item.name!r}: {exc.message}", expected=exc.expected,
                                found=exc.found, fix=exc.fix, code=exc.code) from None


def _label_ids(items: list[SeriesItem], class_names: tuple[str, ...]) -> tuple[np.ndarray | None,
                                                                              tuple[str, ...]]:
    labels = [i.label for i in items]
    if any(lab is None for lab in labels):
        return None, class_names
    names = class_names or tuple(sorted(set(labels)))  # type: ignore[arg-type]
    unknown = sorted(set(labels) - set(names))  # type: ignore[arg-type]
    if unknown:
        raise InvalidInputError("a label in labels.csv is not among the model's classes",
                                expected=", ".join(names), found=f"{len(unknown)} unknown label(s)",
                                code="bad-labels", fix="use the model's class names")
    return np.asarray([names.index(lab) for lab in labels], dtype=np.int64), names  # type: ignore[arg-type]


def load_volume_arrays(source: str | os.PathLike[str], io: IOSpec, spec: Any, *,
                       what: str = "validation") -> LabelledArrays:
    """Every series of ``source`` preprocessed to the model input (whole-volume models):
    (N, C, *spatial) float32 with labels from labels.csv (None when unlabelled).

    Raises:
        InvalidInputError / CalibrationError: a series refused, or a preprocessed volume whose
            shape is not the model's (set ``size`` in the VolumeSpec).
    """
    from ..errors import CalibrationError

    items = index_series(source)
    y, names = _label_ids(items, tuple(io.labels))
    x = np.empty((len(items), *io.sample_shape), dtype=np.float32)
    for n, (item, arr, _, _) in enumerate(iter_volumes(items, spec)):
        if arr.shape != io.sample_shape:
            raise CalibrationError(
                f"{what} series {item.name!r} preprocesses to another shape than the model's input",
                expected="x".join(map(str, io.sample_shape)), found="x".join(map(str, arr.shape)),
                fix="set size=(d, h, w) in the VolumeSpec (crop/pad to the model input)",
                code="shape",
            )
        x[n] = arr
    return LabelledArrays(x, y, names, tuple(i.folder for i in items))
