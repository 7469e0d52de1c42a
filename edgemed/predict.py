"""Predict on DICOM files or folders with any model ``edgemed_runtime.open`` accepts.

One row per file, whatever happens to the others: a file that cannot be read is reported (named,
with its error code) and the run goes on; the result has a summary and an exit code
(0 all read, 4 some failed, 2 none could be read). Files found in a folder without a DICOM suffix
that are no DICOM image (a DICOMDIR, a README) are listed as skipped, not failed. A file read as a
raw dataset (no Part 10 header) carries a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgemed_runtime import EdgemedError, VolumeSpec
from edgemed_runtime import open as open_model

from .dicom.index import dicom_files
from .errors import InvalidInputError
from .runtime import resolve_artifact
from .series_predict import series_inputs, series_row

RAW_WARNING = ("no DICOM Part 10 header (128-byte preamble, DICM, File Meta Information): "
               "read as a raw dataset")
SKIPPABLE = ("not-dicom", "no-pixel-data")
EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 4
"""Exit statuses (edgemed_runtime.exit_codes: ok, bad-input, partial)."""


@dataclass(frozen=True)
class Input:
    """One file to predict on; ``listed`` when found in a folder (not named by the user)."""

    path: Path
    listed: bool = False


@dataclass(frozen=True)
class PredictResult:
    """Rows (one per file: ``file``, ``status`` ok / failed / skipped, ``prediction``,
    ``probabilities``, ``warnings``, ``error``), the model path opened, and a note on it."""

    model: Path
    rows: tuple[dict[str, Any], ...]
    note: str | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when every file was read, 4 (partial) when some failed, 2 when none was read."""
        failed, ok = self.count("failed"), self.count("ok")
        if not failed:
            return EXIT_OK if ok else EXIT_BAD_INPUT
        return EXIT_PARTIAL if ok else EXIT_BAD_INPUT

    def summary(self) -> dict[str, Any]:
        """Counts per status, files with warnings, and the exit code."""
        return {"files": len(self.rows), "ok": self.count("ok"), "failed": self.count("failed"),
                "skipped": self.count("skipped"),
                "warned": sum(bool(r["warnings"]) for r in self.rows), "exit_code": self.exit_code}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.exit_code == EXIT_OK, "model": str(self.model), "note": self.note,
                "summary": self.summary(), "predictions": list(self.rows)}


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Accept a file inside an artifact folder for the folder (``out/model.onnx`` -> ``out``)."""
    return resolve_artifact(path)[0]


def expand_inputs(files: Iterable[str | os.PathLike[str]]) -> list[Input]:
    """Files as given, folders expanded to their DICOM files at any depth (``.dcm``, ``.dicom``
    or no suffix; sorted).

    Raises:
        InvalidInputError: ``empty``: a folder without any such file, or no input at all.
    """
    out: list[Input] = []
    for f in files:
        p = Path(f)
        if p.is_dir():
            found = dicom_files(p)
            if not found:
                raise InvalidInputError("no DICOM files in folder", found=str(p), code="empty",
                                        expected="files ending in .dcm / .dicom, or with no suffix")
            out += [Input(q, listed=True) for q in found]
        else:
            out.append(Input(p))
    if not out:
        raise InvalidInputError("no input files", expected="DICOM files or folders",
                                found="none", code="empty")
    return out


def _is_raw(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) < 132 or head[128:132] != b"DICM"


def _row(sess: Any, item: Input, labels: list[str]) -> dict[str, Any]:
    """One file's row; an EdgemedError becomes a failed (or skipped) row."""
    row: dict[str, Any] = {"file": str(item.path), "status": "ok", "prediction": None,
                           "probabilities": {}, "warnings": [], "error": None}
    try:
        probs = sess.predict(str(item.path))[0]
    except EdgemedError as exc:
        skip = item.listed and item.path.suffix == "" and exc.code in SKIPPABLE
        row.update(status="skipped" if skip else "failed", error=exc.to_dict())
        return row
    names = labels if len(labels) == len(probs) else [str(i) for i in range(len(probs))]
    row.update(prediction=names[int(probs.argmax())],
               probabilities={n: float(v) for n, v in zip(names, probs)})
    if _is_raw(item.path):
        row["warnings"].append(RAW_WARNING)
    return row


def predict_files(model: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]],
                  *, backend: str | None = None, seg_out: str | os.PathLike[str] | None = None,
                  **open_kwargs: Any) -> PredictResult:
    """Open ``model`` once and predict on every file (see the module docstring).

    Args:
        model: an artifact folder (or a file in it: ``out/model.onnx``), a bundle or a model file.
        files: DICOM files and folders; for a volume model, series folders (or folders holding
            series folders at any depth: one row per series).
        seg_out: for a segmentation model, write one DICOM SEG per series into this folder.
        backend, open_kwargs: passed to ``edgemed_runtime.open`` (``trust``, ``device_key``...).
    Returns:
        a PredictResult; files that cannot be read are failed rows, not exceptions.
    Raises:
        InvalidInputError / BundleError...: the model cannot be opened, or a folder holds no
            DICOM file.
    """
    files = list(files)
    path, note = resolve_artifact(model)
    with open_model(path, backend=backend, **open_kwargs) as sess:
        labels = list(sess.labels) or [str(i) for i in range(len(sess.outputs))]
        if isinstance(sess.preprocess, VolumeSpec):  # one row per series
            rows = tuple(series_row(sess, folder, labels, seg_out) for folder in
                         series_inputs(files))
        else:
            rows = tuple(_row(sess, item, labels) for item in expand_inputs(files))
    return PredictResult(path, rows, note, tuple(labels))
