"""Affine augmentation: pixel-space matrices, their conversion to ``F.affine_grid``'s theta, and ``RandomAffine``.

Conventions (one place, because every sign error in augmentation silently corrupts labels):

- Matrices are homogeneous, 3x3 in 2D and 4x4 in 3D, in PIXEL (voxel) index space: a pixel's centre is at its
  integer index. Vectors are x-first like ``F.affine_grid``: x = last tensor axis (W), y = H, z = D. Sizes are
  given in tensor order, ``(H, W)`` or ``(D, H, W)``. Flip axes, translations and per-axis scales use x-first
  indices: axis 0 = x = W (left-right as displayed), 1 = y = H, 2 = z = D.
- A matrix is the FORWARD map, source pixel -> destination pixel; ``to_theta`` inverts it, since
  ``affine_grid`` asks for the destination -> source map in normalized coordinates.
- Rotation, flip, scale and shear act about the image centre ``(S - 1) / 2``. A positive 2D angle rotates
  counter-clockwise as displayed (row 0 on top): +90 degrees equals ``torch.rot90(x, 1, dims=(-2, -1))``. In 3D the
  angles are about x, y, z, applied in that order, and +90 degrees about x / y / z equals ``torch.rot90`` over
  dims (-3, -2) / (-1, -3) / (-2, -1).
- Every builder takes batched parameters (leading dims) and returns float64 matrices ``(..., k, k)``;
  ``compose(a, b, c)`` applies ``a`` first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ._base import Transform, as_ranges, check_batch, check_probability, expand, finish, gate, hull, uniform
from ..ops import affine_warp

__all__ = ["identity", "rotation", "translation", "flip", "scaling", "shear", "compose", "to_theta",
           "apply_affine", "RandomAffine"]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


def _t(x: Any) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _spatial(size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(s) for s in size)
    if len(size) not in (2, 3) or any(s < 1 for s in size):
        raise ValueError(f"size must be the spatial shape (H, W) or (D, H, W) with positive sides, got {size}")
    return size


def _centre(size: Sequence[int]) -> torch.Tensor:
    return _t([(s - 1) / 2 for s in reversed(size)])  # (ndim,) x-first


def identity(ndim: int, batch_shape: Sequence[int] = ()) -> torch.Tensor:
    """Identity matrices ``(*batch_shape, ndim + 1, ndim + 1)``."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    return torch.eye(ndim + 1, dtype=torch.float64).expand(*batch_shape, ndim + 1, ndim + 1).clone()


def _about_centre(linear: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Homogeneous matrix of ``linear`` (..., nd, nd) acting about the image centre: x -> A (x - c) + c."""
    nd = linear.shape[-1]
    c = _centre(size)
    m = identity(nd, linear.shape[:-2])
    m[..., :nd, :nd] = linear
    m[..., :nd, nd] = c - (linear @ c.unsqueeze(-1)).squeeze(-1)
    return m


def _plane(angle: torch.Tensor, nd: int, i: int, j: int) -> torch.Tensor:
    """Rotation in the plane of coordinates (i, j): +90 degrees takes axis i onto axis j."""
    c, s = torch.cos(angle), torch.sin(angle)
    r = torch.eye(nd, dtype=torch.float64).expand(*angle.shape, nd, nd).clone()
    r[..., i, i], r[..., i, j], r[..., j, i], r[..., j, j] = c, -s, s, c
    return r


def rotation(angles_deg: Any, size: Sequence[int]) -> torch.Tensor:
    """Rotation about the centre. 2D: ``angles_deg`` (...,); 3D: (..., 3), degrees about x, y, z (x first)."""
    size = _spatial(size)
    a = _t(angles_deg) * (math.pi / 180.0)
    if len(size) == 2:
        lin = _plane(a, 2, 1, 0)  # tensor dims (H, W) = coordinates (y, x)
    else:
        if a.shape[-1:] != (3,):
            raise ValueError(f"3D rotation needs angles (..., 3) about x, y, z, got shape {tuple(a.shape)}")
        rx = _plane(a[..., 0], 3, 2, 1)  # tensor dims (D, H)
        ry = _plane(a[..., 1], 3, 0, 2)  # tensor dims (W, D)
        rz = _plane(a[..., 2], 3, 1, 0)  # tensor dims (H, W)
        lin = rz @ ry @ rx
    return _about_centre(lin, size)


def translation(offsets: Any) -> torch.Tensor:
    """Shift by ``offsets`` (..., ndim) pixels, x-first: ``translation((3, -2))`` moves content 3 px right, 2 up."""
    t = _t(offsets)
    if t.dim() == 0 or t.shape[-1] not in (2, 3):
        raise ValueError(f"translation offsets must be (..., 2) or (..., 3) pixels x-first, got shape "
                         f"{tuple(t.shape)}")
    m = identity(t.shape[-1], t.shape[:-1])
    m[..., :-1, -1] = t
    return m


def flip(axes: Any, size: Sequence[int]) -> torch.Tensor:
    """Mirror about the centre. ``axes``: x-first axis indices (``(0,)`` = left-right, equal to
    ``torch.flip(x, (-1,))``), or a bool tensor (..., ndim) saying per sample which axes flip."""
    size = _spatial(size)
    nd = len(size)
    if isinstance(axes, torch.Tensor) and axes.dtype == torch.bool:
        if axes.shape[-1:] != (nd,):
            raise ValueError(f"flip flags must be a bool tensor (..., {nd}), got shape {tuple(axes.shape)}")
        flags = axes
    else:
        axes = tuple(int(a) for a in axes)
        if any(a not in range(nd) for a in axes):
            raise ValueError(f"flip axes must be x-first indices in 0..{nd - 1}, got {axes}")
        flags = torch.zeros(nd, dtype=torch.bool)
        flags[list(axes)] = True
    return _about_centre(torch.diag_embed(1.0 - 2.0 * flags.to(torch.float64)), size)


def scaling(factors: Any, size: Sequence[int]) -> torch.Tensor:
    """Zoom about the centre: a number (isotropic) or per-axis factors (..., ndim) x-first; > 1 enlarges."""
    size = _spatial(size)
    nd = len(size)
    f = _t(factors)
    if f.dim() == 0:
        f = f.expand(nd)
    if f.shape[-1] != nd:
        raise ValueError(f"scale factors must be a number or (..., {nd}) x-first, got shape {tuple(f.shape)}")
    if not bool((f != 0).all()):
        raise ValueError("scale factors must be nonzero (a zero scale is not invertible)")
    return _about_centre(torch.diag_embed(f), size)


def shear(factors: Any, size: Sequence[int]) -> torch.Tensor:
    """Skew about the centre. ``factors`` (..., ndim * (ndim - 1)) fill the off-diagonal entries row by row:
    2D (xy, yx): x' = x + xy * y, y' = y + yx * x; 3D (xy, xz, yx, yz, zx, zy). A factor is tan(shear angle)."""
    size = _spatial(size)
    nd = len(size)
    f = _t(factors)
    if f.dim() == 0 or f.shape[-1] != nd * (nd - 1):
        raise ValueError(f"{nd}D shear needs (..., {nd * (nd - 1)}) factors, got shape {tuple(f.shape)}")
    lin = torch.eye(nd, dtype=torch.float64).expand(*f.shape[:-1], nd, nd).clone()
    off = ~torch.eye(nd, dtype=torch.bool)
    lin[..., off] = f
    return _about_centre(lin, size)


def compose(*matrices: torch.Tensor) -> torch.Tensor:
    """One matrix doing ``matrices[0]`` first, then the next, ...; batch dims broadcast."""
    if not matrices:
        raise ValueError("compose needs at least one matrix")
    out = _t(matrices[0])
    for m in matrices[1:]:
        m = _t(m)
        if m.shape[-2:] != out.shape[-2:]:
            raise ValueError(f"compose: cannot chain a {tuple(out.shape[-2:])} matrix with a {tuple(m.shape[-2:])}")
        out = m @ out
    return out


def _normalizer(size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Pixel index -> ``affine_grid``'s normalized coordinate, per axis u = a x + b (x-first)."""
    nd = len(size)
    n = identity(nd)
    for i, s in enumerate(reversed(size)):
        if align_corners:  # -1 and 1 are the centres of the corner pixels
            a, b = (2.0 / (s - 1), -1.0) if s > 1 else (1.0, 0.0)
        else:  # -1 and 1 are the outer edges of the corner pixels
            a, b = 2.0 / s, 1.0 / s - 1.0
        n[i, i], n[i, nd] = a, b
    return n


def to_theta(matrix: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """The ``theta`` (..., ndim, ndim + 1) that makes ``F.affine_grid`` + ``F.grid_sample`` apply the forward
    pixel-space ``matrix`` to an image of spatial ``size``; non-square sizes keep pixels square (no distortion)."""
    size = _spatial(size)
    m = _t(matrix)
    k = len(size) + 1
    if m.shape[-2:] != (k, k):
        raise ValueError(f"to_theta: a {len(size)}D size needs ({k}, {k}) matrices, got shape {tuple(m.shape)}")
    n = _normalizer(size, align_corners)
    theta = n @ torch.linalg.inv(m) @ torch.linalg.inv(n)  # normalized destination -> normalized source
    return theta[..., :-1, :]


def _check_modes(owner: str, mode: str, padding_mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{owner}: mode must be one of {MODES}, got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{owner}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def apply_affine(image: torch.Tensor, matrix: torch.Tensor, mask: torch.Tensor | None = None, *,
                 mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False):
    """Warp a batch (and its mask, nearest) by forward pixel-space matrices: (k, k) for all or (N, k, k).

    Returns the image, or (image, mask) when a mask is given; output size = input size.
    """
    image, m, added = check_batch("apply_affine", image, mask)
    _check_modes("apply_affine", mode, padding_mode)
    n, size = image.shape[0], tuple(image.shape[2:])
    mat = _t(matrix)
    if mat.dim() == 2:
        mat = mat.expand(n, *mat.shape)
    if mat.dim() != 3 or mat.shape[0] != n:
        raise ValueError(f"apply_affine: matrix must be (k, k) or (N={n}, k, k), got shape {tuple(mat.shape)}")
    theta = to_theta(mat, size, align_corners).to(device=image.device, dtype=image.dtype)
    out = affine_warp(image, theta, m, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return finish(*out, added) if m is not None else out


@dataclass(frozen=True)
class RandomAffine(Transform):
    """One random affine per sample (scale, shear, rotation, flips about the centre, then translation), composed
    into a single matrix so the image is resampled once; the mask gets the same matrix with nearest sampling.

    Ranges: a number r means (-r, r) (scale: (1 - r, 1 + r)), a pair (low, high) applies to every axis, a
    sequence of pairs gives one per axis (x-first; rotation in 3D: about x, y, z; shear: see ``shear``).
    ``translation`` is a fraction of the image extent per axis (0.1 = up to 10% of the width along x).
    Each of rotation/translation/scale/shear happens with its probability; each axis in ``flip_axes`` flips with
    ``p_flip``.
    """

    rotation_deg: Any = 0.0
    translation: Any = 0.0
    scale: Any = 0.0
    shear: Any = 0.0
    flip_axes: tuple[int, ...] = ()
    isotropic_scale: bool = True
    p_rotation: float = 1.0
    p_translation: float = 1.0
    p_scale: float = 1.0
    p_shear: float = 1.0
    p_flip: float = 0.5
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False

    kind = "affine"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self._ranges()  # parses and validates every range
        for name in ("p_rotation", "p_translation", "p_scale", "p_shear", "p_flip"):
            check_probability(owner, name, getattr(self, name))
        axes = tuple(self.flip_axes)
        if any(isinstance(a, bool) or not isinstance(a, int) or a not in (0, 1, 2) for a in axes) or \
                len(set(axes)) != len(axes):
            raise ValueError(f"{owner}: flip_axes must be distinct x-first axis indices in (0, 1, 2), got {axes}")
        object.__setattr__(self, "flip_axes", axes)
        _check_modes(owner, self.mode, self.padding_mode)

    def _ranges(self) -> dict[str, tuple]:
        owner = type(self).__name__
        r = {"rotation_deg": as_ranges(owner, "rotation_deg", self.rotation_deg, (1, 3)),
             "translation": as_ranges(owner, "translation", self.translation, (2, 3)),
             "scale": as_ranges(owner, "scale", self.scale, (2, 3), centre=1.0),
             "shear": as_ranges(owner, "shear", self.shear, (2, 6))}
        if any(lo <= 0 for lo, _ in r["scale"]):
            raise ValueError(f"{owner}: scale factors must stay > 0, got range(s) {r['scale']}")
        if self.isotropic_scale and len(r["scale"]) > 1:
            raise ValueError(f"{owner}: isotropic_scale=True takes one scale range, got {len(r['scale'])} per-axis "
                             "ranges (set isotropic_scale=False)")
        return r

    def policy_limits(self) -> dict[str, Any]:
        r = self._ranges()
        p = {"rotation_deg": self.p_rotation, "translation": self.p_translation, "scale": self.p_scale,
             "shear": self.p_shear}
        off = {"rotation_deg": (0.0, 0.0), "translation": (0.0, 0.0), "scale": (1.0, 1.0), "shear": (0.0, 0.0)}
        limits = {k: hull(v) if p[k] > 0 else off[k] for k, v in r.items()}
        limits["flip_axes"] = self.flip_axes if self.p_flip > 0 else ()
        return limits

    def sample_matrices(self, n: int, size: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, k, k) float64 forward pixel-space matrices, one per sample (same draws for the same generator)."""
        size = _spatial(size)
        nd, owner, r = len(size), type(self).__name__, self._ranges()
        angles = uniform(expand(owner, "rotation_deg", r["rotation_deg"], 1 if nd == 2 else 3), n, generator)
        shifts = uniform(expand(owner, "translation", r["translation"], nd), n, generator)
        scales = uniform(expand(owner, "scale", r["scale"], 1 if self.isotropic_scale else nd), n, generator)
        shears = uniform(expand(owner, "shear", r["shear"], nd * (nd - 1)), n, generator)
        flips = torch.rand(n, nd, generator=generator, dtype=torch.float64) < self.p_flip
        g = {k: gate(p, n, generator)[:, None] for k, p in (("rot", self.p_rotation), ("tr", self.p_translation),
                                                            ("sc", self.p_scale), ("sh", self.p_shear))}
        if any(a >= nd for a in self.flip_axes):
            raise ValueError(f"{owner}: flip_axes {self.flip_axes} include an axis a {nd}D image does not have")
        allowed = torch.zeros(nd, dtype=torch.bool)
        allowed[list(self.flip_axes)] = True
        angles = angles * g["rot"]
        shifts = shifts * g["tr"] * _t(size[::-1])  # fraction of the extent -> pixels, x-first
        scales = torch.where(g["sc"], scales, torch.ones_like(scales)).expand(n, nd)
        shears = shears * g["sh"]
        return compose(scaling(scales, size), shear(shears, size), rotation(angles[:, 0] if nd == 2 else angles, size),
                       flip(flips & allowed, size), translation(shifts))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None):
        image, m, added = check_batch(type(self).__name__, image, mask)
        matrices = self.sample_matrices(image.shape[0], image.shape[2:], generator)
        out = apply_affine(image, matrices, m, mode=self.mode, padding_mode=self.padding_mode,
                           align_corners=self.align_corners)
        return finish(*out, added) if m is not None else out
