"""Vectorized numpy building blocks for the synthetic datasets: ellipsoids, smooth random fields, bias fields, noise.

Every function works on a whole batch at once (leading axis N) and in 2D or 3D alike, so generating hundreds of
images is a handful of array operations rather than a Python loop per image. Randomness always comes from the
``numpy.random.Generator`` passed in, never from global state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Ellipsoids", "open_grid", "random_rotations", "ellipsoid_distance", "sphere_distance", "radial_sample",
           "smooth_field", "polynomial_bias", "soft_inside", "pick_voxels", "add_noise", "random_unit_vectors"]


@dataclass
class Ellipsoids:
    """One ellipse (2D) or ellipsoid (3D) per sample, in voxel units along the array axes."""

    centers: np.ndarray  # (N, D) float
    radii: np.ndarray  # (N, D) float, semi-axes in the rotated frame
    rotations: np.ndarray  # (N, D, D); column j is the direction of semi-axis j in array coordinates

    def distance(self, shape: tuple[int, ...], taper: np.ndarray | float = 0.0) -> np.ndarray:
        return ellipsoid_distance(shape, self.centers, self.radii, self.rotations, taper)


def open_grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per-axis coordinate arrays that broadcast to ``shape`` (like ``np.ogrid``), as float32."""
    return [np.arange(s, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(len(shape))])
            for a, s in enumerate(shape)]


def _expand(a: np.ndarray, ndim: int) -> np.ndarray:
    """(N,) -> (N, 1, ..., 1) so a per-sample value broadcasts against (N, *spatial)."""
    return np.asarray(a, dtype=np.float32).reshape((-1,) + (1,) * ndim)


def random_rotations(rng: np.random.Generator, n: int, ndim: int, max_angle: float | None = None) -> np.ndarray:
    """(N, D, D) rotation matrices. 2D: angle uniform in [-max_angle, max_angle] (default: any angle).

    3D: uniformly random rotations (QR of a Gaussian matrix), or, with ``max_angle``, a random axis and an angle up to
    ``max_angle`` (Rodrigues' formula), so organs keep their anatomical orientation.
    """
    if ndim == 2:
        limit = np.pi if max_angle is None else max_angle
        t = rng.uniform(-limit, limit, n)
        c, s = np.cos(t), np.sin(t)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2).astype(np.float32)
    if ndim != 3:
        raise ValueError(f"only 2D and 3D are supported, got ndim={ndim}")
    if max_angle is None:
        q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
        q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
        q[np.linalg.det(q) < 0, :, 0] *= -1  # proper rotations only
        return q.astype(np.float32)
    axis = random_unit_vectors(rng, n, 3)
    t = rng.uniform(-max_angle, max_angle, n)[:, None, None]
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)
    return (np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k).astype(np.float32)


def random_unit_vectors(rng: np.random.Generator, n: int, ndim: int) -> np.ndarray:
    """(N, D) directions uniform on the circle/sphere."""
    v = rng.standard_normal((n, ndim))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def ellipsoid_distance(shape: tuple[int, ...], centers: np.ndarray, radii: np.ndarray, rotations: np.ndarray,
                       taper: np.ndarray | float = 0.0) -> np.ndarray:
    """Normalized distance (N, *shape): 0 at the center, 1 on the surface, as the ellipsoid's quadratic form.

    ``taper`` (per sample) narrows the second semi-axis along the first one (egg/wedge shapes such as a liver):
    the local coordinate 1 is divided by ``1 + taper * u0`` where ``u0`` is the normalized coordinate 0.
    """
    n, ndim = centers.shape
    grid = open_grid(shape)
    diff = [g[None] - _expand(centers[:, a], ndim) for a, g in enumerate(grid)]  # D x (N, 1.., S_a, 1..)
    local = [sum(diff[a] * _expand(rotations[:, a, j], ndim) for a in range(ndim)) for j in range(ndim)]
    u = [local[j] / _expand(radii[:, j], ndim) for j in range(ndim)]
    taper = np.broadcast_to(np.asarray(taper, dtype=np.float32), (n,))
    if np.any(taper != 0):
        u[1] = u[1] / np.clip(1.0 + _expand(taper, ndim) * u[0], 0.3, None)
    return np.sqrt(sum(x * x for x in u)).astype(np.float32)  # (N, *shape)


def radial_sample(field: np.ndarray, centers: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(N, *shape): at every voxel, ``field`` read at the point ``radius`` away from the center in its direction.

    Modulating a lesion's radius with this keeps the outline star-shaped (one connected piece, however irregular),
    which modulating the distance with the field directly does not.
    """
    n, ndim = centers.shape
    shape = field.shape[1:]
    diff = [g[None] - _expand(centers[:, a], ndim) for a, g in enumerate(open_grid(shape))]
    norm = np.sqrt(sum(x * x for x in diff))
    scale = _expand(radius, ndim) / np.maximum(norm, 1e-6)
    idx = [np.clip(np.rint(_expand(centers[:, a], ndim) + diff[a] * scale), 0, s - 1).astype(np.intp)
           for a, s in enumerate(shape)]
    flat = np.ravel_multi_index([np.broadcast_to(i, (n,) + shape) for i in idx], shape)
    return np.take_along_axis(field.reshape(n, -1), flat.reshape(n, -1), axis=1).reshape(field.shape)


def sphere_distance(shape: tuple[int, ...], centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Distance to per-sample centers divided by per-sample radii, (N, *shape); cheaper than rotated ellipsoids."""
    ndim = len(shape)
    grid = open_grid(shape)
    sq = sum((g[None] - _expand(centers[:, a], ndim)) ** 2 for a, g in enumerate(grid))
    return (np.sqrt(sq) / _expand(radii, ndim)).astype(np.float32)


def smooth_field(rng: np.random.Generator, n: int, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian random field (N, *shape), zero mean and unit std per sample, correlation length ``sigma`` voxels.

    White noise low-pass filtered in Fourier space (periodic boundaries, which is harmless for texture).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    axes = tuple(range(1, len(shape) + 1))
    noise = rng.standard_normal((n,) + tuple(shape), dtype=np.float32)
    spec = np.fft.rfftn(noise, axes=axes)
    freqs = [np.fft.fftfreq(s) for s in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    f2 = sum(f.reshape([-1 if i == a else 1 for i in range(len(shape))]) ** 2 for a, f in enumerate(freqs))
    field = np.fft.irfftn(spec * np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * f2)[None], s=shape, axes=axes)
    field -= field.mean(axis=axes, keepdims=True)
    field /= np.maximum(field.std(axis=axes, keepdims=True), 1e-8)
    return field.astype(np.float32)


def polynomial_bias(rng: np.random.Generator, n: int, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """Smooth multiplicative bias field (N, *shape): ``exp(strength * p(x))`` for a random quadratic ``p``.

    ``p`` is normalized so its largest magnitude in the volume is 1: the field spans about
    ``[exp(-strength), exp(strength)]``, like coil-sensitivity shading in MR or beam hardening in CT.
    """
    ndim = len(shape)
    if strength == 0:
        return np.ones((n,) + tuple(shape), dtype=np.float32)
    grid = [np.linspace(-1.0, 1.0, s, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(ndim)])
            for a, s in enumerate(shape)]
    terms = list(grid) + [grid[a] * grid[b] for a in range(ndim) for b in range(a, ndim)]
    coef = rng.uniform(-1.0, 1.0, (n, len(terms))).astype(np.float32)
    p = sum(_expand(coef[:, k], ndim) * t[None] for k, t in enumerate(terms))
    p = np.broadcast_to(p, (n,) + tuple(shape))
    axes = tuple(range(1, ndim + 1))
    p = p / np.maximum(np.abs(p).max(axis=axes, keepdims=True), 1e-8)
    return np.exp(strength * p).astype(np.float32)


def soft_inside(distance: np.ndarray, radius: np.ndarray, edge: np.ndarray | float) -> np.ndarray:
    """Partial-volume weight in [0, 1] from a normalized distance: 0.5 on the surface, ``edge`` voxels wide.

    ``(1 - distance) * radius`` approximates the signed distance in voxels; a logistic of it blurs the edge like a
    scanner's point-spread function (small ``edge``: sharp; large: ill-defined).
    """
    ndim = distance.ndim - 1
    signed = (1.0 - distance) * _expand(radius, ndim)
    edge = _expand(np.broadcast_to(np.asarray(edge, dtype=np.float32), (distance.shape[0],)), ndim)
    return (0.5 * (1.0 + np.tanh(signed / (2.0 * np.maximum(edge, 1e-3))))).astype(np.float32)


def pick_voxels(rng: np.random.Generator, distance: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(N, D) one voxel per sample, uniform among those with ``distance < depth`` (the deepest one if none is).

    Choosing among the voxels of a region itself, rather than inside an ideal ellipse, keeps whatever is placed
    there (a lesion) within the region whatever its shape (tapered, wobbly, carved).
    """
    n, shape = distance.shape[0], distance.shape[1:]
    flat_d = distance.reshape(n, -1)
    inner = flat_d < np.asarray(depth, dtype=np.float32).reshape(-1, 1)  # (N, P)
    score = np.where(inner, rng.random(inner.shape, dtype=np.float32), -1.0)
    flat = np.where(inner.any(1), score.argmax(1), flat_d.argmin(1))
    return np.stack(np.unravel_index(flat, shape), 1).astype(np.float32)


def add_noise(rng: np.random.Generator, images: np.ndarray, std: np.ndarray, kind: str = "gaussian") -> np.ndarray:
    """Additive Gaussian noise or Rician noise (magnitude of a complex signal with Gaussian noise, as in MR)."""
    s = _expand(std, images.ndim - 1)
    if kind == "gaussian":
        return images + s * rng.standard_normal(images.shape, dtype=np.float32)
    if kind == "rician":
        real = images + s * rng.standard_normal(images.shape, dtype=np.float32)
        imag = s * rng.standard_normal(images.shape, dtype=np.float32)
        return np.sqrt(real * real + imag * imag)
    if kind == "none":
        return images
    raise ValueError(f"noise kind must be 'gaussian', 'rician' or 'none', got {kind!r}")
