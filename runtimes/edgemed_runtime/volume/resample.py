"""Resampling a 3D grid to a target voxel size, as MONAI's ``Spacing`` (numpy only).

``spacing_grid`` computes the output grid exactly as MONAI 1.6's ``Spacing(pixdim,
diagonal=False)``: ``zoom_affine`` (keeps the rotation, drops shears) and
``compute_shape_offset`` (output shape ``round(extent / pixdim + 1)``, origin at the input corner
that is lowest in every output axis). ``resample`` then samples the input at voxel centres
(``grid_sample`` with ``align_corners=False``, ``padding_mode="border"``): linear or nearest
(ties to even). When the voxel map is diagonal (the input's axes are orthogonal) the linear
interpolation runs separably, one axis at a time; otherwise trilinear by gathers, in slabs.
"""

from __future__ import annotations

import numpy as np

AFFINE_TOL = 1e-3  # MONAI's: a spacing this close to the target is kept, a map this close to identity skipped
_SLAB_VOXELS = 1 << 18  # output voxels per slab of the non-separable path (~100 bytes each)


def spacing_grid(affine: np.ndarray, shape: tuple[int, int, int],
                 pixdim: tuple[float, float, float]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The output grid of MONAI's ``Spacing(pixdim)`` for an input grid.

    Args:
        affine: 4x4 voxel -> world (RAS) of the input.
        shape: the input's spatial shape.
        pixdim: target voxel sizes (mm), one per voxel axis, positive.
    Returns:
        the output's 4x4 voxel -> world affine and its spatial shape.
    """
    rzs = np.asarray(affine, dtype=np.float64)[:3, :3]
    orig = np.sqrt(np.sum(rzs * rzs, axis=0))
    target = np.asarray(pixdim, dtype=np.float64)
    keep = np.abs(orig - target) <= AFFINE_TOL
    out_d = np.where(keep, orig, target)
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    new = np.eye(4)
    new[:3, :3] = rotation @ np.diag(np.sign(np.diag(zs)) * np.abs(out_d))
    out_shape, offset = _shape_offset(shape, np.asarray(affine, dtype=np.float64), new)
    new[:3, 3] = offset
    return new, out_shape


def _shape_offset(shape: tuple[int, int, int], in_affine: np.ndarray,
                  out_affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """MONAI ``compute_shape_offset`` (scale_extent=False) for a 3D grid."""
    dims = np.asarray(shape, dtype=np.float64)
    coords = [(0.0, d - 1.0) for d in dims]
    corners = np.asarray(np.meshgrid(*coords, indexing="ij")).reshape((3, -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out_affine, in_affine) @ corners
    world = in_affine @ corners
    dist = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset = None
    for i in range(corners.shape[1]):
        if np.allclose(np.min(dist - dist[:, i:i + 1], 1), 0.0, rtol=AFFINE_TOL):
            offset = world[:-1, i]
            break
    if offset is None:  # no corner lowest in every axis: centre the output on the input
        offset = (in_affine[:3, :3] @ (dims / 2.0) + in_affine[:3, 3]
                  - out_affine[:3, :3] @ (out_shape / 2.0))
    return tuple(int(v) for v in out_shape), offset  # type: ignore[return-value]


def is_identity(xform: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """True when MONAI's ``SpatialResample`` would return its input unchanged."""
    return tuple(in_shape) == tuple(out_shape) and bool(np.allclose(xform, np.eye(4), atol=AFFINE_TOL))


def resample(array: np.ndarray, xform: np.ndarray, out_shape: tuple[int, int, int], *,
             mode: str = "linear") -> np.ndarray:
    """Sample ``array`` (..., z, y, x) on a new grid.

    Args:
        array: the input; leading axes (channels) are carried along.
        xform: 4x4 map from output voxel indices to input voxel indices.
        out_shape: the output's spatial shape.
        mode: ``"linear"`` (float32 out) or ``"nearest"`` (input dtype kept).
    Returns:
        (..., *out_shape); coordinates outside the input take the border value.
    """
    in_shape = tuple(array.shape[-3:])
    if is_identity(xform, in_shape, out_shape):
        return array.astype(np.float32) if mode == "linear" else array.copy()
    m = np.asarray(xform, dtype=np.float64)
    reach = np.abs(m[:3, :3] - np.diag(np.diag(m[:3, :3]))) * max(out_shape)
    if float(reach.max()) < 1e-6:  # diagonal: each output axis reads one input axis
        return _separable(array, m, out_shape, mode)
    return _gather(array, m, out_shape, mode)


def _axis_coords(m: np.ndarray, axis: int, n_out: int, n_in: int) -> np.ndarray:
    """Clamped input coordinates (float64) of the output voxels along one axis."""
    c = m[axis, axis] * np.arange(n_out, dtype=np.float64) + m[axis, 3]
    return np.clip(c, 0.0, n_in - 1.0)


def _take(array: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.take(array, index, axis)`` without its C-contiguous copy of a strided ``array``
    (an oriented volume is a transposed, flipped view: that copy cost a whole volume)."""
    return array[(slice(None),) * axis + (index,)]


def _separable(array: np.ndarray, m: np.ndarray, out_shape: tuple[int, int, int],
               mode: str) -> np.ndarray:
    """Resample axis by axis (the axis that shrinks most first)."""
    lead = array.ndim - 3
    in_shape = array.shape[-3:]
    out = array if mode == "nearest" else array.astype(np.float32, copy=False)
    order = sorted(range(3), key=lambda a: out_shape[a] / in_shape[a])
    for a in order:
        if out_shape[a] == in_shape[a] and m[a, a] == 1.0 and m[a, 3] == 0.0:
            continue  # this axis keeps its grid
        c = _axis_coords(m, a, out_shape[a], in_shape[a])
        ax = lead + a
        if mode == "nearest":
            out = _take(out, np.rint(c).astype(np.intp), ax)
            continue
        out = _lerp_axis(out, c, ax)
    return out if out is not array else out.copy()


SLAB_BYTES = 1 << 20  # the temporaries of one linear pass stay about this size


def _lerp_axis(src: np.ndarray, c: np.ndarray, ax: int) -> np.ndarray:
    """Linear interpolation of ``src`` (float32) along axis ``ax`` at the coordinates ``c``,
    slab by slab along another axis, so the temporaries are two slabs, not two outputs (the
    same element-wise operations: the result does not depend on the slab size)."""
    n_in = src.shape[ax]
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * src.ndim
    shape[ax] = -1
    w = (c - i0).astype(np.float32).reshape(shape)
    out_shape = src.shape[:ax] + (len(c),) + src.shape[ax + 1:]
    out = np.empty(out_shape, dtype=np.float32)
    other = max((k for k in range(src.ndim) if k != ax), key=lambda k: src.shape[k])
    per = max(1, int(np.prod(out_shape)) * 4 // max(1, out_shape[other]))
    step = max(1, SLAB_BYTES // per)
    for s0 in range(0, out_shape[other], step):
        sl = (slice(None),) * other + (slice(s0, s0 + step),)
        part = src[sl]
        lo = _take(part, i0, ax)
        hi = _take(part, i1, ax)
        hi -= lo
        hi *= w
        lo += hi
        out[sl] = lo
    return out


def _gather(array: np.ndarray, m: np.ndarray, out_shape: tuple[int, int, int],
            mode: str) -> np.ndarray:
    """General affine resampling: trilinear / nearest by flat gathers, one slab of z at a time."""
    lead_shape = array.shape[:-3]
    n_in = np.asarray(array.shape[-3:])
    flat = array.reshape((-1, int(np.prod(n_in))))
    dtype = array.dtype if mode == "nearest" else np.float32
    out = np.empty((flat.shape[0],) + tuple(out_shape), dtype=dtype)
    plane = out_shape[1] * out_shape[2]
    step = max(1, _SLAB_VOXELS // max(plane, 1))
    jj, ii = np.meshgrid(np.arange(out_shape[1], dtype=np.float64),
                         np.arange(out_shape[2], dtype=np.float64), indexing="ij")
    for z0 in range(0, out_shape[0], step):
        kk = np.arange(z0, min(z0 + step, out_shape[0]), dtype=np.float64)[:, None, None]
        pts = [m[a, 0] * kk + m[a, 1] * jj + m[a, 2] * ii + m[a, 3] for a in range(3)]
        pts = [np.clip(p, 0.0, n_in[a] - 1.0) for a, p in enumerate(pts)]
        out[:, z0:z0 + kk.shape[0]] = _gather_slab(flat, pts, n_in, mode)
    return out.reshape(lead_shape + tuple(out_shape))


def _gather_slab(flat: np.ndarray, pts: list[np.ndarray], n_in: np.ndarray, mode: str) -> np.ndarray:
    """Values of ``flat`` (channels, voxels) at clamped coordinates ``pts`` (z, y, x arrays)."""
    strides = (int(n_in[1] * n_in[2]), int(n_in[2]), 1)
    if mode == "nearest":
        idx = sum(np.rint(p).astype(np.intp) * s for p, s in zip(pts, strides))
        return flat[:, idx]
    lo = [np.floor(p).astype(np.intp) for p in pts]
    hi = [np.minimum(lo_a + 1, int(n_in[a]) - 1) for a, lo_a in enumerate(lo)]
    w = [(p - lo_a).astype(np.float32) for p, lo_a in zip(pts, lo)]
    acc = np.zeros((flat.shape[0],) + pts[0].shape, dtype=np.float32)
    for corner in range(8):
        bits = [(corner >> (2 - a)) & 1 for a in range(3)]
        idx = sum((hi[a] if bits[a] else lo[a]) * strides[a] for a in range(3))
        weight = np.ones(pts[0].shape, dtype=np.float32)
        for a in range(3):
            weight *= w[a] if bits[a] else (1.0 - w[a])
        acc += flat[:, idx].astype(np.float32, copy=False) * weight
    return acc
