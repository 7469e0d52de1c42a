"""Load a folder of DICOM files (optionally labelled) into model-input arrays.

Labels come from a ``labels.csv`` in the folder (columns ``path,label``; paths relative to the
folder) or from one sub-folder per class. Without either, the folder is unlabelled.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed_runtime import InvalidInputError, PreprocessSpec
from edgemed_runtime.sdk import load_input


@dataclass(frozen=True)
class LabelledArrays:
    """Model inputs ``x`` (N, C, H, W), integer labels ``y`` (or None), class names, file paths."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]


def _dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ".dicom"))


def load_folder(
    path: str | os.PathLike[str],
    spec: PreprocessSpec,
    *,
    class_names: tuple[str, ...] | None = None,
) -> LabelledArrays:
    """Read every ``.dcm`` file under ``path`` and apply ``spec``.

    Args:
        path: the folder.
        spec: the PreprocessSpec to apply.
        class_names: fix the label order (else sorted label names).
    Raises:
        InvalidInputError: missing folder, no DICOM files, unknown label, unreadable file.
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(
            "data folder not found", expected="a folder of .dcm files", found=str(root),
            fix="check the path", code="not-found",
        )
    labels_csv = root / "labels.csv"
    named: list[tuple[Path, str | None]]
    if labels_csv.is_file():
        named = []
        with open(labels_csv, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise InvalidInputError(
                    "labels.csv has the wrong columns", expected="path,label[,patient_id]",
                    found=",".join(reader.fieldnames or []), fix="add a header row path,label",
                )
            for row in reader:
                named.append((root / row["path"], row["label"]))
    else:
        files = _dicom_files(root)
        subdirs = sorted(d for d in root.iterdir() if d.is_dir())
        by_class = subdirs and all(f.parent.parent == root for f in files)
        named = [(f, f.parent.name if by_class else None) for f in files]
    if not named:
        raise InvalidInputError(
            "no DICOM files found", expected="files ending in .dcm", found=f"empty folder {root}",
            fix="point at the folder that holds the .dcm files", code="empty",
        )
    x = np.stack([load_input(p, spec) for p, _ in named])
    if any(lab is None for _, lab in named):
        return LabelledArrays(x, None, tuple(class_names or ()), tuple(p for p, _ in named))
    names = tuple(class_names) if class_names else tuple(sorted({str(l) for _, l in named}))
    index = {n: i for i, n in enumerate(names)}
    try:
        y = np.array([index[str(lab)] for _, lab in named], dtype=np.int64)
    except KeyError as exc:
        raise InvalidInputError(
            "label not among the model's classes", expected=", ".join(names), found=str(exc),
        ) from None
    return LabelledArrays(x, y, names, tuple(p for p, _ in named))
