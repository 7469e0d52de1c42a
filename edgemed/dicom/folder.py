"""Load a folder of DICOM files (optionally labelled) into model-input arrays.

Two uses:

- calibration (``labelled=False``): every DICOM file under the folder, at any depth (patient /
  study / series sub-folders are fine); labels are irrelevant and ignored.
- validation (``labelled=True``): labels come from a ``labels.csv`` in the folder (columns
  ``path,label[,patient_id]``; paths relative to the folder) or from one sub-folder per class.
  Without either (files at mixed depths), the folder is unlabelled. Sub-folders that are not
  class names (patient folders, say) are refused with the layouts edgemed expects.

Files are found as the dataset indexer finds them: ``.dcm`` / ``.dicom`` or no suffix. Files with
no suffix that are not DICOM images (a DICOMDIR, a README) are skipped; every other unreadable
file raises an error that names it.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed_runtime import EdgemedError, InvalidInputError, PreprocessSpec
from edgemed_runtime.sdk import load_input

from .index import dicom_files

log = logging.getLogger("edgemed.dicom")

LAYOUTS = ("labels.csv in the folder with columns path,label[,patient_id] (paths relative to the "
           "folder), or one sub-folder per class holding that class's DICOM files")
SKIPPABLE = ("not-dicom", "no-pixel-data")
"""Codes of a file without a DICOM suffix that is skipped instead of refused."""


@dataclass(frozen=True)
class LabelledArrays:
    """Model inputs ``x`` (N, C, H, W), integer labels ``y`` (or None), class names, file paths."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]


def _from_csv(root: Path, labels_csv: Path) -> list[tuple[Path, str | None]]:
    with open(labels_csv, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise InvalidInputError(
                "labels.csv has the wrong columns", expected="path,label[,patient_id]",
                found=",".join(reader.fieldnames or []), fix="add a header row path,label",
                code="bad-labels",
            )
        return [(root / row["path"], row["label"]) for row in reader]


def _by_layout(root: Path, files: list[Path],
               class_names: tuple[str, ...] | None) -> list[tuple[Path, str | None]]:
    """Labels from one sub-folder per class, or none (files at other depths).

    Raises:
        InvalidInputError: ``label-layout``: every file sits one sub-folder deep but the
            sub-folders are not the model's class names (patient folders, say).
    """
    by_class = bool(files) and any(d.is_dir() for d in root.iterdir()) and all(
        f.parent.parent == root for f in files)
    if not by_class:
        return [(f, None) for f in files]
    folders = sorted({f.parent.name for f in files})
    unknown = [n for n in folders if class_names and n not in class_names]
    if unknown:
        # sub-folder names may be patient ids: count them, never print them
        raise InvalidInputError(
            "the validation folder has sub-folders that are not class names",
            expected=f"{LAYOUTS}; classes: {', '.join(class_names or ())}",
            found=f"{len(folders)} sub-folders, {len(unknown)} of them not a class name",
            fix="write labels.csv in the folder, name the sub-folders after the classes, or pass "
                "validation as (x, y) pairs / a DataLoader of (x, y) / LabelledArrays",
            code="label-layout",
        )
    return [(f, f.parent.name) for f in files]


def _read(named: list[tuple[Path, str | None]], spec: PreprocessSpec,
          root: Path) -> tuple[list[np.ndarray], list[tuple[Path, str | None]]]:
    """The model inputs of ``named``; files without a DICOM suffix that are no DICOM image are
    skipped (logged). Raises InvalidInputError naming the file for any other unreadable file."""
    xs: list[np.ndarray] = []
    kept: list[tuple[Path, str | None]] = []
    skipped: list[str] = []
    for p, lab in named:
        try:
            xs.append(load_input(p, spec))
        except EdgemedError as exc:
            if p.suffix == "" and exc.code in SKIPPABLE:
                skipped.append(p.name)
                continue
            rel = os.path.relpath(p, root)
            raise type(exc)(f"{rel}: {exc.message}", expected=exc.expected, found=exc.found,
                            fix=exc.fix or "remove or repair that file", code=exc.code) from None
        kept.append((p, lab))
    raw = [p.name for p, _ in kept if not _has_part10_header(p)]
    if raw:
        log.warning("read %d file(s) without the DICOM Part 10 header as raw datasets (%s%s)",
                    len(raw), ", ".join(raw[:3]), ", ..." if len(raw) > 3 else "")
    if skipped:
        log.warning("skipped %d file(s) without a DICOM suffix that are no DICOM image (%s%s)",
                    len(skipped), ", ".join(skipped[:3]), ", ..." if len(skipped) > 3 else "")
    return xs, kept


def _has_part10_header(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def load_folder(
    path: str | os.PathLike[str],
    spec: PreprocessSpec,
    *,
    class_names: tuple[str, ...] | None = None,
    labelled: bool = True,
) -> LabelledArrays:
    """Read every DICOM file under ``path`` and apply ``spec``.

    Args:
        path: the folder.
        spec: the PreprocessSpec to apply.
        class_names: fix the label order (else sorted label names).
        labelled: False for calibration: every DICOM file at any depth, no labels read.
    Returns:
        the arrays, labels (None when unlabelled), class names and file paths.
    Raises:
        InvalidInputError: missing folder (``not-found``), no DICOM files (``empty``), bad
            labels.csv (``bad-labels``), sub-folders that are not classes (``label-layout``),
            an unknown label, an unreadable file (named).
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(
            "data folder not found", expected="a folder of DICOM files", found=str(root),
            fix="check the path", code="not-found",
        )
    labels_csv = root / "labels.csv"
    if not labelled:
        named: list[tuple[Path, str | None]] = [(f, None) for f in dicom_files(root)]
    elif labels_csv.is_file():
        named = _from_csv(root, labels_csv)
    else:
        named = _by_layout(root, dicom_files(root), class_names)
    xs, named = _read(named, spec, root) if named else ([], [])
    if not named:
        raise InvalidInputError(
            "no DICOM files found", expected="DICOM files (.dcm, .dicom or no suffix), at any depth",
            found=f"none under {root}", fix="point at the folder that holds the DICOM files",
            code="empty",
        )
    x = np.stack(xs)
    paths = tuple(p for p, _ in named)
    if any(lab is None for _, lab in named):
        return LabelledArrays(x, None, tuple(class_names or ()), paths)
    return LabelledArrays(x, _label_ids(named, class_names), _names(named, class_names), paths)


def labelled_files(path: str | os.PathLike[str], class_names: tuple[str, ...] | None = None,
                   *, require_labels: bool = True
                   ) -> tuple[tuple[Path, ...], np.ndarray | None, tuple[str, ...]]:
    """The files of a labelled folder (the layouts of ``load_folder``) and their labels,
    without decoding any image (for workers that decode them: Ray Data).

    Returns (paths, integer labels or None when unlabelled, class names). Raises
    InvalidInputError as ``load_folder`` does for the folder and its labels, and
    ``needs-labels`` when the folder has none and ``require_labels``.
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError("data folder not found", expected="a folder of DICOM files",
                                found=str(root), fix="check the path", code="not-found")
    labels_csv = root / "labels.csv"
    named = (_from_csv(root, labels_csv) if labels_csv.is_file()
             else _by_layout(root, dicom_files(root), class_names))
    if not named:
        raise InvalidInputError(
            "no DICOM files found", expected="DICOM files (.dcm, .dicom or no suffix), at any depth",
            found=f"none under {root}", fix="point at the folder that holds the DICOM files",
            code="empty")
    if any(lab is None for _, lab in named) and not require_labels:
        return tuple(p for p, _ in named), None, tuple(class_names or ())
    if any(lab is None for _, lab in named):
        raise InvalidInputError("the data folder has no labels", expected=LAYOUTS,
                                found=f"{len(named)} files without labels", code="needs-labels",
                                fix="write labels.csv or put each class in its own sub-folder")
    return (tuple(p for p, _ in named), _label_ids(named, class_names),
            _names(named, class_names))


def _names(named: list[tuple[Path, str | None]], class_names: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(class_names) if class_names else tuple(sorted({str(lab) for _, lab in named}))


def _label_ids(named: list[tuple[Path, str | None]],
               class_names: tuple[str, ...] | None) -> np.ndarray:
    names = _names(named, class_names)
    index = {n: i for i, n in enumerate(names)}
    for p, lab in named:
        if str(lab) not in index:
            raise InvalidInputError(
                "a label is not among the model's classes", expected=", ".join(names),
                found=f"label {str(lab)!r} of {p.name}", code="unknown-label",
                fix=f"labels come from {LAYOUTS}; use the class names the model was given",
            )
    return np.array([index[str(lab)] for _, lab in named], dtype=np.int64)
