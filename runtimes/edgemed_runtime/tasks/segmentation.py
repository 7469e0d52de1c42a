"""Segmentation: a per-pixel/voxel softmax (or sigmoid) over label channels.

``Session.predict`` returns a ``SegmentationResult``: the label map on the input's own grid (for
a volume: the original DICOM voxel grid, through the inverse of the volume preprocessing),
optionally the probabilities, and writers ``to_seg()`` (DICOM SEG) / ``to_nifti()``.
Channel ``c`` of the output is ``labels[c]``; with softmax, channel 0 is the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from .base import TaskSpec, activate


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """A label map and where it belongs.

    Attributes:
        labels: integer label map (uint8 / uint16); (z, y, x) for a volume, (N, H, W...) for a
            batch of arrays. 0 = background; ``k`` = ``label_names[k - 1]``.
        label_names: names of labels 1..K.
        source: the ``Volume`` it was computed on (None for raw arrays).
        probabilities: (K+1 or K, ...) float32 probabilities on the same grid, when asked for.
    """

    labels: np.ndarray
    label_names: tuple[str, ...]
    source: Any = field(default=None, repr=False)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each label in millilitres (needs a source volume)."""
        if self.source is None:
            raise InvalidInputError("no source volume: the voxel size is unknown",
                                    fix="predict on a series or a Volume", code="not-volume")
        voxel_ml = float(np.prod(self.source.spacing)) / 1000.0
        counts = np.bincount(self.labels.ravel(), minlength=len(self.label_names) + 1)
        return {n: float(counts[i + 1]) * voxel_ml for i, n in enumerate(self.label_names)}

    def _need_source(self, what: str) -> Any:
        if self.source is None:
            raise InvalidInputError(f"{what} needs the source volume", expected="a result of "
                                    "predict() on a series folder, file list or Volume",
                                    found="a result on raw arrays", code="not-volume")
        return self.source

    def to_seg(self, *, algorithm: tuple[str, str] = ("edgemed", "0"), fractional: bool = False,
               **kwargs: Any) -> Any:
        """A DICOM SEG dataset (highdicom) referencing the source series; see outputs.seg."""
        from ..outputs.seg import seg_dataset

        probs = None
        if fractional:
            if self.probabilities is None:
                raise InvalidInputError("a fractional SEG needs probabilities",
                                        fix="predict(..., probabilities=True)", code="not-volume")
            probs = self.probabilities[-len(self.label_names):]
        return seg_dataset(self.labels, self._need_source("DICOM SEG"),
                           label_names=self.label_names, algorithm=algorithm,
                           probabilities=probs, **kwargs)

    def to_nifti(self) -> Any:
        """A nibabel Nifti1Image of the label map with the source's affine; see outputs.nifti."""
        from ..outputs.nifti import nifti_image

        return nifti_image(self.labels, self._need_source("NIfTI"))


def label_map(probs: np.ndarray, spec: TaskSpec, axis: int = 0) -> np.ndarray:
    """Integer labels from probabilities over ``axis``: argmax for softmax (channel 0 =
    background); for sigmoid, the most probable channel over its threshold (+1), else 0."""
    if spec.activation == "softmax":
        out = np.argmax(probs, axis=axis)
    else:
        p = np.moveaxis(probs, axis, -1)
        th = spec.threshold_array(p.shape[-1])
        best = np.argmax(p, axis=-1)
        over = np.take_along_axis(p, best[..., None], -1)[..., 0] >= th[best]
        out = np.where(over, best + 1, 0)
    return out.astype(np.uint8 if out.max(initial=0) < 256 else np.uint16)


def names_of(labels: Sequence[str], spec: TaskSpec, channels: int) -> tuple[str, ...]:
    """Names of labels 1..K given the channel names (softmax: channel 0 is background)."""
    names = tuple(labels) or tuple(f"label{i}" for i in range(channels))
    return names[1:] if spec.activation == "softmax" else names


class Segmentation:
    name = "segmentation"
    spatial_output = True

    def check_output(self, shape: Sequence[int], input_shape: Sequence[int],
                     labels: Sequence[str]) -> int:
        if len(shape) != len(input_shape) or tuple(shape[2:]) != tuple(input_shape[2:]):
            raise InvalidInputError(
                "a segmentation model must output (batch, channels, *spatial) on the input grid",
                expected="(N, K, " + ", ".join(map(str, input_shape[2:])) + ")",
                found="x".join(map(str, shape)),
                fix="check the model; a classification model needs task = \"classification\"",
                code="bad-output",
            )
        if labels and len(labels) != shape[1]:
            raise InvalidInputError(
                "the model's output channels do not match the labels",
                expected=f"{shape[1]} labels (one per output channel, background first for "
                "softmax)", found=f"{len(labels)} labels", code="label-mismatch",
                fix="list one name per output channel",
            )
        return int(shape[1])

    def decode(self, logits: np.ndarray, spec: TaskSpec, labels: Sequence[str]) -> SegmentationResult:
        probs = activate(logits, spec, axis=1)
        return SegmentationResult(labels=label_map(probs, spec, axis=1),
                                  label_names=names_of(labels, spec, probs.shape[1]),
                                  probabilities=probs)
