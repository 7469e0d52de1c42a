"""Segmentation gate: each validation series through the device pipeline (volume
preprocessing, whole or sliding-window inference, labels mapped back onto the original voxel
grid), then per-case Dice / HD95 / surface Dice against the ground-truth masks (or agreement
with FP32 without them), ``run_segmentation_gate``.

Validation data: a folder of series with ``labels.csv`` (``path,label,patient_id,mask``; the
mask a NIfTI label file on the series' grid) or without masks (agreement only). The volumes are
held in memory for the gate (one per validation series; every candidate runs on them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed_runtime import Artifact, InvalidInputError, Volume, open_artifact

from ..segmentation.gate import SegGateConfig, SegGateResult, run_segmentation_gate
from ..volumes import index_series
from ..volumes.data import read_item

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_mask(path: str | os.PathLike[str], volume: Volume, *, name: str = "") -> np.ndarray:
    """A NIfTI label file as a (z, y, x) integer map on ``volume``'s grid.

    Raises:
        InvalidInputError: ``mask-grid`` (another shape or affine than the image's),
            ``bad-labels`` (not integers), ``missing-dependency`` via nibabel.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types on a broken file
        raise InvalidInputError("cannot read the mask file", expected="a NIfTI label file",
                                found=f"{Path(path).name}: {type(exc).__name__}",
                                code="bad-labels") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    arr = np.transpose(data, (2, 1, 0)) if data.ndim == 3 else data
    ours = (LPS_FROM_RAS @ np.asarray(img.affine, float))[:, [2, 1, 0, 3]]
    tol = 1e-3 * max(volume.spacing) + 1e-4
    if arr.shape != volume.shape or not np.allclose(ours, volume.affine, atol=tol):
        raise InvalidInputError(
            f"series {name!r}: the mask's grid differs from the image's",
            expected=f"{'x'.join(map(str, volume.shape))} voxels on the series' grid",
            found=f"{'x'.join(map(str, arr.shape))} voxels" + (
                "" if arr.shape != volume.shape else ", another affine (position/orientation)"),
            fix="resample the mask onto the image series (same voxels and affine)",
            code="mask-grid")
    if not np.array_equal(arr, np.rint(arr)) or arr.min(initial=0) < 0:
        raise InvalidInputError(f"series {name!r}: the mask is not integer labels",
                                expected="labels 0..K", found=str(arr.dtype), code="bad-labels")
    return np.ascontiguousarray(arr.astype(np.uint16))


@dataclass
class SegmentationEvaluator:
    """Gate label volumes of ``volumes`` against ``truths`` (or FP32 without them)."""

    volumes: list[Volume]
    truths: list[np.ndarray] | None
    label_names: tuple[str, ...]
    cfg: SegGateConfig = field(default_factory=SegGateConfig)
    inputs: np.ndarray | None = None

    @property
    def labelled(self) -> bool:
        return self.truths is not None

    def outputs(self, art: Artifact, backend: str, options: dict[str, Any]) -> list[np.ndarray]:
        with open_artifact(art, backend=backend, options=options) as sess:
            return [sess.predict(v).labels for v in self.volumes]

    def verdict(self, ref: list[np.ndarray], cand: list[np.ndarray]) -> SegGateResult:
        return run_segmentation_gate(ref, cand, self.truths, labels=self.label_names,
                                     spacings=[v.spacing for v in self.volumes], cfg=self.cfg)


def load_cases(source: str | os.PathLike[str]) -> tuple[list[Volume], list[np.ndarray] | None]:
    """The validation series as Volumes and, when every series has a mask, the masks.

    Raises:
        InvalidInputError: a series or a mask refused (its code, the series named).
    """
    items = index_series(source)
    vols, truths = [], []
    for item in items:
        vol = read_item(item)
        vols.append(vol)
        if item.mask is not None:
            truths.append(read_mask(item.mask, vol, name=item.name))
    if truths and len(truths) != len(vols):
        raise InvalidInputError("some validation series have a mask and some do not",
                                expected="a mask for every series (or none: agreement only)",
                                found=f"{len(truths)} of {len(vols)}", code="bad-labels")
    return vols, (truths or None)
