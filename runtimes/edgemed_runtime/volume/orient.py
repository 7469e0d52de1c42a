"""Axis orientation of a 3D grid, as nibabel's ``orientations`` module and MONAI's ``Orientation``.

numpy only. An orientation ``ornt`` is a (3, 2) int array: row ``a`` says that voxel axis ``a``
runs along world axis ``ornt[a, 0]`` in direction ``ornt[a, 1]`` (+1 / -1), world axes being
RAS (nibabel's convention: codes ``L``/``R``, ``P``/``A``, ``I``/``S`` for the low / high end).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def io_orientation(affine: np.ndarray) -> np.ndarray:
    """The closest axis orientation of a voxel -> RAS ``affine`` (nibabel ``io_orientation``).

    Takes a 4x4 affine; returns the (3, 2) int orientation. The polar decomposition (SVD) removes
    shears and zooms; input axes are assigned strongest first (ties in input order).
    """
    rzs = np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1.0
    p, s, qs = np.linalg.svd(rzs / zooms, full_matrices=False)
    keep = s > s.max() * 3 * np.finfo(s.dtype).eps
    r = p[:, keep] @ qs[keep]
    ornt = np.zeros((3, 2), dtype=np.int64)
    for in_ax in np.argsort(np.min(-(r ** 2), axis=0), kind="stable"):
        col = r[:, in_ax]
        out_ax = int(np.argmax(np.abs(col)))
        ornt[in_ax] = (out_ax, -1 if col[out_ax] < 0 else 1)
        r[out_ax, :] = 0.0
    return ornt


def axcodes_ornt(axcodes: str) -> np.ndarray:
    """The orientation of axis codes such as ``"RAS"`` or ``"LPS"`` (nibabel ``axcodes2ornt``).

    Raises:
        InvalidInputError: not three distinct codes, one from each of L/R, P/A, I/S.
    """
    ornt = np.zeros((3, 2), dtype=np.int64)
    seen: set[int] = set()
    codes = str(axcodes).upper()
    for a, code in enumerate(codes):
        world = next((w for w, pair in enumerate(_LABELS) if code in pair), None)
        if world is None or world in seen or a >= 3:
            break
        seen.add(world)
        ornt[a] = (world, 1 if code == _LABELS[world][1] else -1)
    if len(codes) != 3 or len(seen) != 3:
        raise InvalidInputError(
            "axcodes must name each world axis once", expected="three letters, one of L/R, "
            "P/A, I/S each (e.g. RAS)", found=repr(axcodes), code="bad-volume-spec",
        )
    return ornt


def ornt_transform(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The orientation taking axes oriented as ``start`` to ``end`` (nibabel ``ornt_transform``):
    row ``a`` = (new axis of input axis ``a``, flip)."""
    result = np.zeros((3, 2), dtype=np.int64)
    for end_in, (end_out, end_flip) in enumerate(end):
        start_in = int(np.flatnonzero(start[:, 0] == end_out)[0])
        result[start_in] = (end_in, 1 if start[start_in, 1] == end_flip else -1)
    return result


def ornt_affine(ornt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """4x4 map from reoriented voxel indices back to the input's (nibabel ``inv_ornt_aff``)."""
    axis_transpose = [int(v) for v in ornt[:, 0]]
    undo_reorder = np.eye(4)[axis_transpose + [3], :]
    undo_flip = np.diag([float(v) for v in ornt[:, 1]] + [1.0])
    center = -(np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    undo_flip[:3, 3] = ornt[:, 1] * center - center
    return undo_flip @ undo_reorder


def transpose_of(ornt: np.ndarray) -> tuple[int, ...]:
    """The axis permutation that follows the flips: output axis ``a`` is input axis ``t[a]``."""
    return tuple(int(v) for v in np.argsort(ornt[:, 0]))


def reorient(array: np.ndarray, flips: tuple[bool, ...], transpose: tuple[int, ...]) -> np.ndarray:
    """Flip then permute the last three axes of ``array`` (a view; MONAI's order)."""
    lead = array.ndim - 3
    axes = tuple(lead + a for a in range(3) if flips[a])
    out = np.flip(array, axis=axes) if axes else array
    return np.transpose(out, tuple(range(lead)) + tuple(lead + t for t in transpose))


def unorient(array: np.ndarray, flips: tuple[bool, ...], transpose: tuple[int, ...]) -> np.ndarray:
    """Undo ``reorient`` on the last three axes (a view)."""
    lead = array.ndim - 3
    inverse = tuple(int(v) for v in np.argsort(transpose))
    out = np.transpose(array, tuple(range(lead)) + tuple(lead + t for t in inverse))
    axes = tuple(lead + a for a in range(3) if flips[a])
    return np.flip(out, axis=axes) if axes else out
