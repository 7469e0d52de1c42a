"""Calibration and validation data: DICOM folders, .npy/.npz files, arrays or iterables -> arrays.

Sources (``to_arrays``):

- a DICOM folder: for calibration every DICOM file at any depth (labels ignored); for
  validation labelled by ``labels.csv`` or one sub-folder per class (``dicom.folder``);
- ``.npy`` / ``.npz`` files (or a folder of them), an ndarray (N, C, H, W) or (C, H, W);
- an iterable, read as NNCF's ``Dataset(data_source, transform_fn)`` reads one: a list of
  samples, a torch ``DataLoader``, an ``nncf.Dataset``; each item (after ``transform_fn``) is a
  sample shaped like ``example_input`` without or with its batch axis (C x H x W, 1 x C x H x W,
  B x C x H x W), an ``(x, y)`` pair or a ``{"image": x, "label": y}`` dict; torch tensors are
  fine. Labels come from the pairs (validation); calibration ignores them.

Sampling is deterministic (seed); the count, seed and a SHA-256 of the chosen samples are recorded
in the artifact's provenance. Bad data raises CalibrationError naming the offending item.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgemed_runtime import IOSpec, PreprocessSpec

from .dicom import LabelledArrays, load_folder
from .errors import CalibrationError, InvalidInputError

ACCEPTED = ("a DICOM folder, a .npy/.npz file or folder, an ndarray, or an iterable of samples "
            "(C x H x W or B x C x H x W), (x, y) pairs or {'image', 'label'} dicts: a list, a "
            "torch DataLoader or an nncf.Dataset")


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


def _numpy(value: Any) -> np.ndarray:
    """A numpy array of ``value`` (torch tensors detached and moved to the CPU first)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _split_item(item: Any) -> tuple[Any, Any]:
    """(x, y or None) of one iterable item: a pair, an image/label dict, or a bare sample."""
    if isinstance(item, dict):
        key = next((k for k in ("image", "x", "input") if k in item), None)
        if key is None:
            raise CalibrationError("a dict item has no image", expected="keys 'image' (and 'label')",
                                   found=", ".join(map(str, item)) or "no keys", code="shape")
        return item[key], item.get("label", item.get("y"))
    if isinstance(item, (tuple, list)) and len(item) == 2 and np.ndim(_numpy_or_none(item[0])) >= 2:
        return item[0], item[1]
    return item, None


def _numpy_or_none(value: Any) -> Any:
    try:
        return _numpy(value)
    except Exception:
        return None


def _batch(x: Any, i: int, io: IOSpec, what: str) -> np.ndarray:
    """Item ``i``'s samples as (B, C, H, W). Raises CalibrationError (``shape``)."""
    try:
        a = _numpy(x)
    except Exception:
        a = None
    shape = tuple(io.sample_shape)
    if a is not None and a.dtype != object and tuple(a.shape) == shape:
        return a[None]
    if a is not None and a.dtype != object and a.ndim == len(shape) + 1 and tuple(a.shape[1:]) == shape:
        return a
    found = "x".join(map(str, a.shape)) if a is not None and a.dtype != object else type(x).__name__
    raise CalibrationError(
        f"{what} item {i} has the wrong shape",
        expected=f"{'x'.join(map(str, shape))} or Bx{'x'.join(map(str, shape))} (like example_input)",
        found=found, code="shape",
        fix="preprocess every item the same way, or pass transform_fn (an nncf.Dataset) that "
            "returns the model input",
    )


def _labels(y: Any, n: int, i: int, what: str) -> np.ndarray:
    """Item ``i``'s labels as n int64 class indices. Raises CalibrationError (``bad-labels``)."""
    a = _numpy(y).reshape(-1)
    if len(a) != n or not (np.issubdtype(a.dtype, np.integer) or
                           (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
        raise CalibrationError(
            f"{what} item {i} has labels that are not class indices",
            expected=f"{n} integer class index(es)", found=f"{len(a)} value(s) of {a.dtype}",
            fix="give y as class indices (0..K-1), one per sample", code="bad-labels",
        )
    return a.astype(np.int64)


def _from_iterable(source: Iterable[Any], io: IOSpec, what: str,
                   transform_fn: Callable[[Any], Any] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples and labels (None when no item has any) of an iterable, NNCF-style."""
    if hasattr(source, "get_inference_data") and callable(source.get_inference_data):
        source = source.get_inference_data()  # an nncf.Dataset: its transform applied
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    for i, item in enumerate(source):
        if transform_fn is None:
            raw_x, raw_y = _split_item(item)
        else:
            raw_x, raw_y = _split_item(transform_fn(item))
            if raw_y is None and isinstance(item, (tuple, list)) and len(item) == 2:
                raw_y = item[1]  # the model input from the transform, the label from the pair
        batch = _batch(raw_x, i, io, what)
        xs.append(batch)
        ys.append(None if raw_y is None else _labels(raw_y, len(batch), i, what))
    if not xs:
        raise CalibrationError(f"the {what} set is empty", expected="at least 1 sample",
                               found="0 samples", code="empty")
    x = np.concatenate(xs)
    if all(y is None for y in ys):
        return x, None
    if any(y is None for y in ys):
        first = next(i for i, y in enumerate(ys) if y is None)
        raise CalibrationError(f"{what} item {first} has no label while others have",
                               expected="every item an (x, y) pair, or none", found="a mix",
                               code="bad-labels")
    return x, np.concatenate([y for y in ys if y is not None])


def _from_path(p: Path, io: IOSpec, spec: PreprocessSpec, what: str) -> LabelledArrays:
    if not p.exists():
        raise InvalidInputError(f"{what} data not found", found=str(p), code="not-found",
                                fix="check the path")
    if p.suffix in (".npy", ".npz") or (p.is_dir() and any(p.glob("*.np[yz]"))):
        return LabelledArrays(_from_npy(p), None, (), ())
    return load_folder(p, spec, class_names=io.labels or None, labelled=what != "calibration")


def _load(source: Any, io: IOSpec, spec: PreprocessSpec, what: str,
          transform_fn: Callable[[Any], Any] | None) -> LabelledArrays:
    if isinstance(source, LabelledArrays):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), io, spec, what)
    if hasattr(source, "detach") and transform_fn is None:  # a torch tensor
        source = _numpy(source)
    if isinstance(source, np.ndarray) and transform_fn is None:
        return LabelledArrays(source, None, (), ())
    if isinstance(source, Iterable) or hasattr(source, "get_inference_data"):
        x, y = _from_iterable(source, io, what, transform_fn)
        return LabelledArrays(x, None if what == "calibration" else y, tuple(io.labels), ())
    raise CalibrationError(f"unsupported {what} data", expected=ACCEPTED, found=type(source).__name__)


def to_arrays(
    source: Any, io: IOSpec, spec: PreprocessSpec, *, what: str = "calibration",
    transform_fn: Callable[[Any], Any] | None = None,
) -> LabelledArrays:
    """Turn any supported source into (N, *sample_shape) float32 arrays (labels if it has them).

    Args:
        source: see the module docstring (``ACCEPTED``).
        what: ``"calibration"`` (labels ignored, DICOM folders read at any depth) or
            ``"validation"``.
        transform_fn: applied to every item of an iterable (as ``nncf.Dataset``'s); returns the
            model input or an ``(x, y)`` pair.
    Raises:
        CalibrationError: empty, mis-shaped or non-finite data, labels that are not class
            indices (names the first bad item).
        InvalidInputError: a path that does not exist, a DICOM folder with the wrong layout.
    """
    la = _load(source, io, spec, what, transform_fn)
    x, labels, names, paths = np.asarray(la.x), la.y, la.class_names, la.paths
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
    source: Any, io: IOSpec, spec: PreprocessSpec, *, count: int = 64, seed: int = 0,
    transform_fn: Callable[[Any], Any] | None = None,
) -> CalibrationSet:
    """Load ``source`` and pick ``count`` samples deterministically (all if fewer)."""
    arrays = to_arrays(source, io, spec, transform_fn=transform_fn)
    n = len(arrays.x)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(count, n), replace=False))
    src = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    return CalibrationSet(arrays.x[idx], seed, src, n)
