"""Resampling on the patient grid (scipy.ndimage, no torch): to a new voxel spacing for the network, and back onto
the source geometry for the output. Linear for images, nearest for label maps.

Both directions go through the affines, so ``resample_like(resample_to_spacing(v, s), v)`` lands on ``v``'s voxels
exactly. ``resample_to_spacing`` keeps the centre of voxel (0, 0, 0) fixed and ends the grid within half an output
voxel of the source's last voxel centre. Output voxels whose centre falls outside the source's extent get ``cval``.
"""
from __future__ import annotations

import functools

import numpy as np

from . import _deps
from .volume import Volume

__all__ = ["resample_to_spacing", "resample_to_reference", "resample_like"]


def _order(label: bool, order: int | None) -> int:
    if order is None:
        return 0 if label else 1
    if order not in range(6):
        raise ValueError(f"order must be 0..5 (0 nearest, 1 linear, 3 cubic), got {order}")
    return int(order)


def _outside(matrix, offset, in_shape, out_shape) -> np.ndarray:
    """Output voxels whose centre lies outside the source voxels' extent, widened to half an output voxel along axes
    where output voxels are larger (a coarser grid may cover the source's last partial voxel)."""
    m = np.diag(matrix) if np.ndim(matrix) == 1 else np.asarray(matrix)
    tol = 0.5 * np.maximum(1.0, np.abs(m).max(axis=1))  # in source voxels, per source axis
    axes = [np.arange(n, dtype=np.float64) for n in out_shape]
    if np.allclose(m - np.diag(np.diag(m)), 0.0, atol=1e-9):  # axis-aligned: one 1D test per axis, broadcast
        flags = [(c < -t) | (c > n - 1 + t) for c, t, n in
                 ((offset[a] + m[a, a] * axes[a], tol[a], in_shape[a]) for a in range(len(in_shape)))]
        nd = len(flags)
        shaped = [f.reshape((1,) * a + (-1,) + (1,) * (nd - a - 1)) for a, f in enumerate(flags)]
        return np.broadcast_to(functools.reduce(np.logical_or, shaped), tuple(out_shape))
    out = np.zeros(tuple(out_shape), dtype=bool)
    rest = np.ix_(*axes[1:])
    for z in range(out_shape[0]):  # one output slice at a time: memory stays at a few slices, not 3 full grids
        for a, n in enumerate(in_shape):
            c = offset[a] + m[a, 0] * z + sum(m[a, b + 1] * g for b, g in enumerate(rest))
            out[z] |= (c < -tol[a]) | (c > n - 1 + tol[a])
    return out


def _map(array, matrix, offset, out_shape, order, cval, channel_axis):
    """scipy affine_transform per channel; ``matrix``/``offset`` map output array index -> input array index.

    Within the source's extent (see ``_outside``) edges extend as the nearest voxel, so a round trip keeps the
    border; farther out is ``cval``.
    """
    ndimage = _deps.ndimage()
    kind = np.float32 if order > 0 or array.dtype.kind == "f" else array.dtype
    src = array.astype(np.float32) if order > 0 and array.dtype != np.float32 else array
    if channel_axis is not None:
        channels = [_map(src[..., c], matrix, offset, out_shape, order, cval, None) for c in range(src.shape[-1])]
        return np.stack(channels, axis=-1)
    out = ndimage.affine_transform(src, matrix, offset, output_shape=tuple(int(n) for n in out_shape), order=order,
                                   mode="nearest", prefilter=order > 1).astype(kind, copy=False)
    out[_outside(matrix, np.asarray(offset, dtype=np.float64), src.shape, out.shape)] = cval
    return out


def resample_to_spacing(volume: Volume, spacing, *, label: bool = False, order: int | None = None,
                        cval: float = 0.0) -> Volume:
    """Resample onto ``spacing`` (array order, mm) along the volume's own axes; label maps use nearest neighbour."""
    nd = volume.spatial_ndim
    new = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if new.shape != (nd,) or np.any(new <= 0):
        raise ValueError(f"spacing must hold {nd} positive values in array order, got {tuple(spacing)}")
    old = np.asarray(volume.spacing, dtype=np.float64)
    scale = new / old  # output index step in input index units, array order
    out_shape = np.rint((np.asarray(volume.spatial_shape) - 1) / scale).astype(int) + 1  # last centre within half
    # an output voxel of the source's last centre: the grid covers the same extent
    array = _map(volume.array, scale, np.zeros(nd), out_shape, _order(label, order), cval, volume.channel_axis)
    affine = volume.affine.copy()
    affine[:3, :nd] = volume.affine[:3, :nd] * scale[::-1][None, :]  # affine columns are (i, j, k) = reversed
    meta = dict(volume.meta, resampled_from={"shape": volume.spatial_shape, "spacing": volume.spacing,
                                             "affine": volume.affine.tolist()})
    return Volume(array, affine, tuple(new), volume.modality, meta, list(volume.sources), list(volume.skipped))


def resample_to_reference(array, affine, ref_shape, ref_affine, *, label: bool = False, order: int | None = None,
                          cval: float = 0.0, channel_axis: int | None = None) -> np.ndarray:
    """Values of ``array`` (with its LPS ``affine``) at the voxels of a reference grid (``ref_shape`` in array order,
    ``ref_affine``). Points outside the source get ``cval`` (background 0 for masks; e.g. -1024 for CT)."""
    array = np.asarray(array)
    nd = len(ref_shape)
    if nd not in (2, 3) or array.ndim - (channel_axis is not None) != nd:
        raise ValueError(f"array of shape {array.shape} and ref_shape {tuple(ref_shape)} must both be 2D or 3D "
                         f"(channels last only with channel_axis=-1)")
    ref_to_src = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(ref_affine, dtype=np.float64)
    m = ref_to_src[:nd, :nd][::-1, ::-1]  # (i, j, k) order -> array order (k, j, i)
    offset = ref_to_src[:nd, 3][::-1]
    if nd == 2 and np.any(np.abs(ref_to_src[2, :2]) > 1e-6) or nd == 2 and abs(ref_to_src[2, 3]) > 1e-3:
        raise ValueError("the reference 2D grid does not lie in the plane of the source image")
    return _map(array, m, offset, ref_shape, _order(label, order), cval, channel_axis)


def resample_like(volume: Volume, reference: Volume, *, label: bool = False, order: int | None = None,
                  cval: float = 0.0) -> Volume:
    """``volume`` resampled onto ``reference``'s grid (shape, spacing, affine); meta/sources follow the reference."""
    array = resample_to_reference(volume.array, volume.affine, reference.spatial_shape, reference.affine,
                                  label=label, order=order, cval=cval, channel_axis=volume.channel_axis)
    meta = dict(reference.meta)
    if volume.channel_axis is not None:
        meta["channel_axis"] = -1
    else:
        meta.pop("channel_axis", None)
    return Volume(array, reference.affine.copy(), reference.spacing, reference.modality, meta,
                  list(reference.sources), list(reference.skipped))
