"""Predict on DICOM files or folders with any model ``edgemed_runtime.open`` accepts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from edgemed_runtime import open as open_model
from edgemed_runtime.sdk import ARTIFACT_FILE

from .errors import InvalidInputError


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Accept an artifact's model file for its directory (``out/model.onnx`` -> ``out``)."""
    p = Path(path)
    if p.is_file() and (p.parent / ARTIFACT_FILE).is_file():
        return p.parent
    return p


def expand_inputs(files: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded to their ``.dcm`` files (sorted)."""
    out: list[Path] = []
    for f in files:
        p = Path(f)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in (".dcm", ".dicom"))
            if not found:
                raise InvalidInputError("no DICOM files in folder", found=str(p), code="empty")
            out += found
        else:
            out.append(p)
    return out


def predict_files(model: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]],
                  *, backend: str | None = None, **open_kwargs: Any) -> list[dict[str, Any]]:
    """Open ``model`` and return one dict per file: file, prediction, probabilities by label.

    Raises:
        InvalidInputError: a missing/non-DICOM file or a path that is not a model.
    """
    paths = expand_inputs(files)
    with open_model(resolve_model_path(model), backend=backend, **open_kwargs) as sess:
        labels = list(sess.labels) or [str(i) for i in range(len(sess.outputs))]
        rows = []
        for p in paths:
            probs = sess.predict(str(p))[0]
            names = labels if len(labels) == len(probs) else [str(i) for i in range(len(probs))]
            rows.append({"file": str(p), "prediction": names[int(probs.argmax())],
                         "probabilities": {n: float(v) for n, v in zip(names, probs)}})
    return rows
