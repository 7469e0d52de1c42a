"""The dataset builder: folder (+ labels) -> indexed, filtered, split, calibration-sampled,
optionally decoded into a cache; saved as ``<out>/dataset.json``.

    m = build_dataset("data/", "ds/", spec=PreprocessSpec(), calib_count=64)
    train = DicomDataset.from_manifest("ds/", split="train")   # (x, y) items, numpy only
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgemed.errors import InvalidInputError
from edgemed_runtime import PreprocessSpec
from edgemed_runtime.sdk import atomic_write_bytes

from .cache import ArrayCache
from .index import Record, SeriesFilter, index_folder
from .sampler import calibration_sample
from .split import SPLITS, check_no_leak, patient_split

MANIFEST = "dataset.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class DatasetManifest:
    """Everything the build decided: records with their split, classes, calibration, report."""

    root: Path
    records: tuple[Record, ...]
    splits: tuple[str, ...]
    class_names: tuple[str, ...]
    spec: PreprocessSpec
    calibration: dict[str, Any]
    report: dict[str, Any]

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def to_dict(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "root": str(self.root), "class_names": list(self.class_names),
                "spec": self.spec.to_dict(), "calibration": self.calibration, "report": self.report,
                "records": [dict(r.to_dict(), split=s) for r, s in zip(self.records, self.splits)]}


def summarize(records: Sequence[Record], splits: Sequence[str]) -> dict[str, Any]:
    """Counts per split x (class, modality, scanner), patients per split."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        rs = [r for r, s in zip(records, splits) if s == split]
        out[split] = {
            "files": len(rs), "patients": len({r.patient_id for r in rs}),
            "class": dict(sorted(collections.Counter(r.label or "-" for r in rs).items())),
            "modality": dict(sorted(collections.Counter(r.modality for r in rs).items())),
            "scanner": dict(sorted(collections.Counter(r.scanner for r in rs).items())),
        }
    return out


def build_dataset(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    spec: PreprocessSpec | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    series: SeriesFilter | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    calib_count: int = 64,
    decode: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetManifest:
    """Index ``root``, filter, split by patient, sample calibration files, write the manifest.

    Args:
        decode: also decode every kept file into ``<out>/cache`` (the array cache).
        progress: called as ``progress(done, total)`` while decoding.
    Raises:
        InvalidInputError: no files, nothing left after the filter (``empty``), a patient leak
            (``patient-leak``, cannot happen by construction but is checked), bad split/count.
    """
    spec = spec or PreprocessSpec()
    series = series or SeriesFilter()
    all_records, skipped = index_folder(root, labels_csv)
    records = [r for r in all_records if series.accepts(r)]
    if not records:
        raise InvalidInputError("no files left after the series selection", code="empty",
                                expected="at least one file matching the filter",
                                found=f"{len(all_records)} indexed, 0 kept", fix="relax the filter")
    splits = patient_split(records, fractions, seed)
    leak = check_no_leak(records, splits)
    if not leak.ok:
        raise InvalidInputError("a patient or study is in more than one split", code="patient-leak",
                                found=f"{len(leak.patients)} patients, {len(leak.studies)} studies",
                                fix="check the patient_id column of the labels CSV")
    labels = sorted({r.label for r in records if r.label is not None})
    train = [i for i, s in enumerate(splits) if s == "train"] or list(range(len(records)))
    calib = calibration_sample(records, calib_count, seed, eligible=train)
    report = {"indexed": len(all_records), "kept": len(records), "skipped": [
        {"path": p, "code": c} for p, c in skipped], "filter": series.to_dict(),
        "fractions": list(fractions), "seed": seed, "leak_check": leak.to_dict(),
        "counts": summarize(records, splits)}
    manifest = DatasetManifest(Path(root).resolve(), tuple(records), tuple(splits), tuple(labels), spec,
                               calib.to_dict(), report)
    out_p = Path(out)
    if decode:
        cache = ArrayCache(out_p / "cache", spec)
        for n, r in enumerate(records):
            cache.load(manifest.root / r.path)
            if progress is not None:
                progress(n + 1, len(records))
    atomic_write_bytes(out_p / MANIFEST, json.dumps(manifest.to_dict(), indent=1,
                                                    sort_keys=True).encode())
    return manifest


def load_manifest(out: str | os.PathLike[str]) -> DatasetManifest:
    """Read ``<out>/dataset.json``.

    Raises:
        InvalidInputError: ``not-found`` or ``bad-manifest``.
    """
    path = Path(out) / MANIFEST if Path(out).is_dir() else Path(out)
    if not path.is_file():
        raise InvalidInputError("dataset manifest not found", found=str(path), code="not-found",
                                fix="run `edgemed dataset build` first")
    try:
        d = json.loads(path.read_text())
        records = tuple(Record.from_dict(r) for r in d["records"])
        return DatasetManifest(Path(d["root"]), records, tuple(r["split"] for r in d["records"]),
                               tuple(d["class_names"]), PreprocessSpec.from_dict(d["spec"]),
                               d["calibration"], d["report"])
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError("dataset manifest is not valid", found=type(exc).__name__,
                                code="bad-manifest", fix="rebuild it with `edgemed dataset build`") from None


class DicomDataset:
    """Items ``(x, y)`` of one split (or the calibration sample): x from the array cache.

    Works as a map-style dataset for any loader (numpy only; no torch needed here).
    """

    def __init__(self, manifest: DatasetManifest, indices: Sequence[int], cache: ArrayCache) -> None:
        self.manifest = manifest
        self.indices = list(indices)
        self.cache = cache
        self._label_index = {n: i for i, n in enumerate(manifest.class_names)}

    @classmethod
    def from_manifest(cls, out: str | os.PathLike[str], split: str = "train") -> "DicomDataset":
        """``split`` is train / val / test / calibration.

        Raises:
            InvalidInputError: ``bad-split``.
        """
        m = load_manifest(out)
        if split == "calibration":
            idx = list(m.calibration["indices"])
        elif split in SPLITS:
            idx = m.indices(split)
        else:
            raise InvalidInputError("unknown split", expected="train, val, test or calibration",
                                    found=split, code="bad-split")
        base = Path(out) if Path(out).is_dir() else Path(out).parent
        return cls(m, idx, ArrayCache(base / "cache", m.spec))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        r = self.manifest.records[self.indices[i]]
        x = self.cache.load(self.manifest.root / r.path)
        return x, self._label_index.get(r.label, -1) if r.label is not None else -1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All items stacked: (N, C, H, W) and labels (N,)."""
        items = [self[i] for i in range(len(self))]
        return np.stack([x for x, _ in items]), np.array([y for _, y in items], dtype=np.int64)
