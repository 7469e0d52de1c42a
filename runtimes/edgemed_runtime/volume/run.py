"""Running a model on a volume: series/Volume/array -> volume preprocessing -> whole-volume or
sliding-window inference -> task decoding on the original voxel grid.

Used by ``Session.predict`` / ``Session.logits`` when the artifact's preprocessing is a
``VolumeSpec``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..tasks import SegmentationResult, activate, label_map
from ..tasks.segmentation import names_of
from .core import Volume


def as_volume(x: Any) -> Volume:
    """A ``Volume`` from a series folder, a list of DICOM files, a Volume or a (z, y, x) array.

    Raises:
        InvalidInputError: anything else (and every refusal of ``read_series``).
    """
    if isinstance(x, Volume):
        return x
    if isinstance(x, (str, os.PathLike)) or (
            isinstance(x, Sequence) and not isinstance(x, (str, bytes)) and x
            and all(isinstance(i, (str, os.PathLike)) for i in x)):
        from ..dicom.series import read_series

        return read_series(x if isinstance(x, (str, os.PathLike)) else [Path(p) for p in x])
    if isinstance(x, np.ndarray) and x.ndim == 3:
        return Volume.from_array(x)
    raise InvalidInputError(
        "this model takes a volume", expected="a DICOM series folder, a list of the series' "
        "files, a Volume, or a (z, y, x) array", found=_describe(x),
        fix="pass the series folder (edgemed-run run SERIES_FOLDER)", code="not-volume",
    )


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {'x'.join(map(str, x.shape))}"
    return type(x).__name__


def forward(session: Any, batch: np.ndarray) -> np.ndarray:
    """The model's first output for a preprocessed batch (1, C, *spatial): one run for
    ``mode = "whole"`` (or no inference spec), else sliding-window inference."""
    name, first = session.io.input_name, session.io.output_names[0]
    spec = getattr(session, "inference", None)
    if spec is None or spec.mode == "whole":
        return session.run({name: batch})[first]
    from ..inference import sliding_window

    return sliding_window(batch, lambda w: session.run({name: w})[first], spec)


def prepare_volume(session: Any, x: Any) -> tuple[np.ndarray, Any, Volume]:
    """(model-ready batch (1, C, *spatial), placement, volume) for ``x``."""
    vol = as_volume(x)
    arr, placement = session.preprocess.apply(vol)
    return np.ascontiguousarray(arr[None], dtype=np.dtype(session.io.input_dtype)), placement, vol


def predict_volume(session: Any, x: Any, *, probabilities: bool = False) -> Any:
    """What ``Session.predict`` returns for a volume model: class probabilities (1, K) for a
    non-spatial task, a ``SegmentationResult`` on the original grid for segmentation."""
    batch, placement, vol = prepare_volume(session, x)
    task = session.task
    if not task.task.spatial_output:
        del vol  # nothing of the source is returned: its voxels are freed before inference
        return task.task.decode(forward(session, batch), task, session.io.labels)
    out = forward(session, batch)
    probs = activate(out[0], task, axis=0)
    labels = source_labels(session.preprocess, probs, placement, task)
    back = session.preprocess.invert(probs, placement, mode="linear") if probabilities else None
    return SegmentationResult(labels=np.ascontiguousarray(labels).astype(label_map_dtype(labels)),
                              label_names=names_of(session.io.labels, task, probs.shape[0]),
                              source=vol, probabilities=back)


def source_labels(spec: Any, probs: np.ndarray, placement: Any, task: Any) -> np.ndarray:
    """The label volume on the source grid from (K, *model grid) probabilities: the task's
    label map on the model grid, mapped back by nearest neighbour (``VolumeSpec.invert``)."""
    return spec.invert(label_map(probs, task, axis=0)[None], placement, mode="nearest")[0]


def label_map_dtype(labels: np.ndarray) -> type:
    """uint8 when every label fits, else uint16."""
    return np.uint8 if int(np.max(labels, initial=0)) < 256 else np.uint16


def series_folders(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The series folders under ``paths``: each folder that directly holds files (``.dcm``,
    ``.dicom`` or no suffix), sorted; the inputs of a volume model.

    Raises:
        InvalidInputError: ``not-volume`` (a file, not a folder), ``empty`` (no such file).
    """
    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if not p.is_dir():
            raise InvalidInputError("a volume model takes series folders", expected="a folder "
                                    "holding one DICOM series (or folders of series)",
                                    found=p.name, code="not-volume",
                                    fix="pass the series folder, not one of its files")
        found = sorted({f.parent for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                        and f.suffix.lower() in (".dcm", ".dicom", "")})
        if not found:
            raise InvalidInputError("no DICOM files in folder", found=str(p), code="empty",
                                    expected="files ending in .dcm / .dicom, or with no suffix")
        out += found
    return out


def result_row(result: Any, labels: Sequence[str]) -> dict[str, Any]:
    """The JSON-ready summary of one prediction: class probabilities, or label volumes (ml)."""
    if isinstance(result, SegmentationResult):
        return {"prediction": "segmentation", "volumes_ml": result.volumes_ml() if
                result.source is not None else {}, "shape": list(result.labels.shape)}
    probs = np.asarray(result)[0]
    names = list(labels) if len(labels) == len(probs) else [str(i) for i in range(len(probs))]
    return {"prediction": names[int(probs.argmax())],
            "probabilities": {n: float(v) for n, v in zip(names, probs)}}
