"""NIfTI-1 from a label volume or per-channel maps, with nibabel, on the source volume's grid.

A ``Volume``'s array is (k, j, i) = (slice, row, column) with a voxel -> LPS affine; nibabel's is
(i, j, k) with a voxel -> RAS affine. So the data is transposed (a (C, z, y, x) array becomes
(x, y, z, C)) and the affine becomes ``diag(-1, -1, 1, 1) @ affine @ P``, where ``P`` swaps the
index order: voxel (i, j, k) of the file is voxel (k, j, i) of the volume, at the same place in the
patient. Integer labels are written as uint8 / uint16, floats as float32; sform and qform are
both set (code 1, scanner). No DICOM value goes into the header.
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..util import atomic_write_bytes
from ..volume import Volume
from .checks import check_grid, label_array
from .deps import require

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SWAP_KJI = np.array([[0.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])


def ras_affine(source: Volume) -> np.ndarray:
    """The voxel (i, j, k) -> RAS mm affine of ``source``'s grid (nibabel's convention)."""
    return LPS_TO_RAS @ source.affine @ SWAP_KJI


def _file_array(data: np.ndarray, source: Volume) -> np.ndarray:
    """``data`` as the file's array: (x, y, z) or (x, y, z, C), uint8/uint16 or float32."""
    arr = np.asarray(data)
    if arr.ndim == 4:
        check_grid(arr.shape[1:], source, "channel array")
    elif arr.ndim != 3:
        raise InvalidInputError("NIfTI output takes (z, y, x) or (C, z, y, x) data", code="mask-grid",
                                expected=f"(z, y, x) = {source.shape} or (C, z, y, x)",
                                found=str(arr.shape))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInputError("the data contain NaN or infinity", code="bad-probabilities",
                                    expected="finite values", found="non-finite values")
        arr = arr.astype(np.float32, copy=False)
    elif arr.ndim == 3:
        arr = label_array(arr, source)
    else:
        arr = np.stack([label_array(c, source) for c in arr]).astype(
            np.uint16 if arr.size and int(arr.max()) > 255 else np.uint8)
    return np.ascontiguousarray(arr.T if arr.ndim == 3 else np.transpose(arr, (3, 2, 1, 0)))


def nifti_image(data: np.ndarray, source: Volume) -> Any:
    """A ``nibabel.Nifti1Image`` of ``data`` on ``source``'s grid.

    Args:
        data: (z, y, x) integer labels (stored uint8 / uint16) or floats (float32), or a
            (C, z, y, x) stack of them (stored as 4D, channels last).
        source: the volume the data were computed on (DICOM or not).

    Raises:
        InvalidInputError: ``mask-grid`` (not on the grid), ``bad-labels`` (negative or > 65535
            integers), ``bad-probabilities`` (non-finite floats).
        MissingDependencyError: nibabel is not installed.
    """
    nib = require("nibabel")
    arr = _file_array(data, source)
    aff = ras_affine(source)
    img = nib.Nifti1Image(arr, aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = b"edgemed"
    return img


def nifti_bytes(data: np.ndarray, source: Volume, *, compress: bool = False) -> bytes:
    """``nifti_image(data, source)`` as single-file NIfTI-1 bytes (.nii; gzip'd .nii.gz when
    ``compress``), in memory.

    Raises:
        InvalidInputError, MissingDependencyError: as ``nifti_image``.
    """
    raw = nifti_image(data, source).to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def write_nifti(path: str, data: np.ndarray, source: Volume) -> None:
    """Write ``nifti_bytes`` to ``path`` atomically; gzip'd when ``path`` ends in ``.gz``.

    Raises:
        InvalidInputError: as ``nifti_image``; ``output-not-writable``.
        MissingDependencyError: nibabel is not installed.
    """
    data_bytes = nifti_bytes(data, source, compress=str(path).endswith(".gz"))
    try:
        atomic_write_bytes(path, data_bytes)
    except OSError as exc:
        raise InvalidInputError("cannot write the NIfTI file", code="output-not-writable",
                                found=type(exc).__name__, fix="choose a writable folder") from None
