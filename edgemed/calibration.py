"""Calibration and validation data: DICOM folders, .npy/.npz files, arrays or iterables -> arrays.

Sampling is deterministic (seed); the count, seed and a SHA-256 of the chosen samples are recorded
in the artifact's provenance. Bad data raises CalibrationError naming the offending item.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgemed_runtime import IOSpec, PreprocessSpec

from .dicom import LabelledArrays, load_folder
from .errors import CalibrationError, InvalidInputError


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration inputs (N, C, H, W) float32 and how they were chosen."""

    x: np.ndarray
    seed: int
    source: str
    total: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.x).tobytes()).hexdigest()

    def info(self) -> dict[str, Any]:
        """Provenance record: count, seed, hash, where it came from."""
        return {"count": int(len(self.x)), "available": self.total, "seed": self.seed,
                "sha256": self.sha256, "source": self.source}


def _from_npy(path: Path) -> np.ndarray:
    if path.is_dir():
        files = sorted([*path.glob("*.npy"), *path.glob("*.npz")])
        if not files:
            raise CalibrationError("no .npy/.npz files in the folder", found=str(path), code="empty")
        return np.concatenate([_from_npy(f) for f in files])
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CalibrationError(
            "cannot read the array file", expected="a .npy or .npz of float arrays",
            found=f"{path.name}: {type(exc).__name__}",
        ) from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        if not keys:
            raise CalibrationError("empty .npz file", found=str(path), code="empty")
        return np.asarray(data["x"] if "x" in keys else data[keys[0]])
    return np.asarray(data)


def to_arrays(
    source: Any, io: IOSpec, spec: PreprocessSpec, *, what: str = "calibration"
) -> LabelledArrays:
    """Turn any supported source into (N, *sample_shape) float32 arrays (labels if it has them).

    Raises:
        CalibrationError: empty, mis-shaped or non-finite data (names the first bad item).
        InvalidInputError: a path that does not exist.
    """
    labels = None
    names: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    if isinstance(source, LabelledArrays):
        x, labels, names, paths = source.x, source.y, source.class_names, source.paths
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise InvalidInputError(f"{what} data not found", found=str(p), code="not-found",
                                    fix="check the path")
        has_npy = p.suffix in (".npy", ".npz") or (p.is_dir() and any(p.glob("*.np[yz]")))
        if has_npy:
            x = _from_npy(p)
        else:
            la = load_folder(p, spec, class_names=io.labels or None)
            x, labels, names, paths = la.x, la.y, la.class_names, la.paths
    elif isinstance(source, np.ndarray):
        x = source
    elif isinstance(source, Iterable):
        items = []
        for i, item in enumerate(source):
            a = np.asarray(item)
            if a.shape != io.sample_shape:
                raise CalibrationError(
                    f"{what} item {i} has the wrong shape",
                    expected="x".join(map(str, io.sample_shape)),
                    found="x".join(map(str, a.shape)), fix="preprocess every item the same way",
                )
            items.append(a)
        if not items:
            raise CalibrationError(f"the {what} set is empty", expected="at least 1 sample",
                                   found="0 samples", code="empty")
        x = np.stack(items)
    else:
        raise CalibrationError(
            f"unsupported {what} data", expected="a folder, .npy/.npz, an array or an iterable",
            found=type(source).__name__,
        )
    x = np.asarray(x)
    if x.ndim == len(io.sample_shape):
        x = x[None]
    if len(x) == 0:
        raise CalibrationError(f"the {what} set is empty", expected="at least 1 sample",
                               found="0 samples", code="empty")
    if tuple(x.shape[1:]) != io.sample_shape:
        raise CalibrationError(
            f"{what} data has the wrong shape",
            expected="Nx" + "x".join(map(str, io.sample_shape)),
            found="x".join(map(str, x.shape)),
            fix="use the model's input size in the PreprocessSpec, or resize the arrays",
            code="shape",
        )
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        where = f" ({paths[i].name})" if paths else ""
        raise CalibrationError(
            f"{what} item {i}{where} contains NaN or Inf", expected="finite values",
            found="non-finite values", fix="drop or repair that item", code="non-finite",
        )
    return LabelledArrays(x.astype(np.float32, copy=False), labels, names, paths)


def sample_calibration(
    source: Any, io: IOSpec, spec: PreprocessSpec, *, count: int = 64, seed: int = 0
) -> CalibrationSet:
    """Load ``source`` and pick ``count`` samples deterministically (all if fewer)."""
    arrays = to_arrays(source, io, spec)
    n = len(arrays.x)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(count, n), replace=False))
    src = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    return CalibrationSet(arrays.x[idx], seed, src, n)
