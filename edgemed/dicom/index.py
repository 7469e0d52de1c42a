"""Index a folder of DICOM files: one record per file with its label and header facts.

Labels come from a labels CSV (``path,label[,patient_id]``, paths relative to the folder), or
one sub-folder per class, or none. Headers are read defensively (pixels skipped); files that are
not readable DICOM images are listed as skipped with their error code.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgemed.errors import EdgemedError, InvalidInputError
from edgemed_runtime.sdk import (MAX_FRAME_PIXELS, MAX_TOTAL_PIXELS, ORIENTATIONS, SeriesFilter,
                                 image_type_of, orientation_of)

__all__ = ["ORIENTATIONS", "Record", "SeriesFilter", "discover", "dicom_files", "index_folder",
           "orientation_of"]


@dataclass(frozen=True)
class Record:
    """One indexed file (``path`` relative to the dataset root, POSIX separators)."""

    path: str
    label: str | None
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    body_part: str
    orientation: str
    frames: int
    manufacturer: str
    model: str
    rows: int
    columns: int
    photometric: str
    image_type: tuple[str, ...] = ()

    @property
    def scanner(self) -> str:
        return f"{self.manufacturer} / {self.model}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["image_type"] = tuple(fields.get("image_type", ()))  # absent in older manifests
        return cls(**fields)


def dicom_files(root: Path) -> list[Path]:
    """Files under ``root`` that look like DICOM (.dcm/.dicom, or no suffix), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in (".dcm", ".dicom", ""))


def discover(root: Path, labels_csv: Path | None = None) -> list[tuple[Path, str | None, str | None]]:
    """(file, label, patient_id from the CSV) for every file to index.

    Raises:
        InvalidInputError: ``not-found``, ``bad-labels`` (wrong columns / missing file), ``empty``.
    """
    if not root.is_dir():
        raise InvalidInputError("data folder not found", expected="a folder of DICOM files",
                                found=str(root), fix="check the path", code="not-found")
    csv_path = labels_csv if labels_csv is not None else root / "labels.csv"
    out: list[tuple[Path, str | None, str | None]] = []
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            if not {"path", "label"} <= cols:
                raise InvalidInputError("labels CSV has the wrong columns", code="bad-labels",
                                        expected="path,label[,patient_id]", found=",".join(sorted(cols)))
            base = root.resolve()
            for n, row in enumerate(reader, start=2):
                p = root / row["path"]
                if base not in p.resolve().parents:
                    raise InvalidInputError("a path in the labels CSV leaves the data folder",
                                            code="bad-labels", expected="paths inside the folder",
                                            found=f"line {n}")
                if not p.is_file():
                    raise InvalidInputError("a file in the labels CSV does not exist", code="bad-labels",
                                            expected="paths relative to the data folder",
                                            found=f"line {n}: {row['path']}")
                out.append((p, row["label"], (row.get("patient_id") or None)))
    elif labels_csv is not None:
        raise InvalidInputError("labels CSV not found", found=str(labels_csv), code="not-found")
    else:
        files = dicom_files(root)
        by_class = any(d.is_dir() for d in root.iterdir()) and bool(files) and all(
            f.parent.parent == root for f in files)
        out = [(f, f.parent.name if by_class else None, None) for f in files]
    if not out:
        raise InvalidInputError("no DICOM files found", expected="DICOM files (.dcm)",
                                found=f"nothing under {root}", code="empty")
    return out


def _text(ds: Any, keyword: str, default: str = "") -> str:
    try:
        value = ds.get(keyword, default)
        return str(value).strip() if value not in (None, "") else default
    except Exception:
        return default


def index_folder(root: str | os.PathLike[str], labels_csv: str | os.PathLike[str] | None = None,
                 ) -> tuple[list[Record], list[tuple[str, str]]]:
    """Read every file's header; return (records, skipped [(relative path, error code)]).

    A file without Patient ID (in the CSV or the header) is grouped by its Study Instance UID.
    """
    from edgemed_runtime.sdk import quiet, read_dataset

    with quiet():
        return _index(Path(root), labels_csv, read_dataset)


def _index(base: Path, labels_csv: str | os.PathLike[str] | None, read_dataset: Any,
           ) -> tuple[list[Record], list[tuple[str, str]]]:
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for path, label, csv_pid in discover(base, Path(labels_csv) if labels_csv else None):
        rel = path.relative_to(base).as_posix()
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except EdgemedError as exc:
            skipped.append((rel, exc.code))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append((rel, "no-pixel-data"))
            continue
        study = _text(ds, "StudyInstanceUID", "unknown-study")
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            rows, cols = int(ds.Rows), int(ds.Columns)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
        except Exception:
            skipped.append((rel, "bad-attribute"))
            continue
        if rows * cols * samples > MAX_FRAME_PIXELS or rows * cols * samples * frames > MAX_TOTAL_PIXELS:
            skipped.append((rel, "pixel-budget"))
            continue
        records.append(Record(
            path=rel, label=label, patient_id=csv_pid or _text(ds, "PatientID") or f"study:{study}",
            study_uid=study, series_uid=_text(ds, "SeriesInstanceUID", "unknown-series"),
            modality=_text(ds, "Modality", "OT").upper(), body_part=_text(ds, "BodyPartExamined", "").upper(),
            orientation=orientation_of(ds.get("ImageOrientationPatient")), frames=frames,
            manufacturer=_text(ds, "Manufacturer", "unknown"), model=_text(ds, "ManufacturerModelName", "unknown"),
            rows=rows, columns=cols, photometric=_text(ds, "PhotometricInterpretation", ""),
            image_type=image_type_of(ds),
        ))
    return records, skipped
