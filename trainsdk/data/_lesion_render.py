"""Appearance models of the three synthetic lesion types and of the organ-like background they sit in.

Each renderer returns a partial-volume weight ``w`` in [0, 1] (the lesion's extent, soft at the edge) and the
intensity ``value`` the lesion has where ``w`` is 1; the caller composites ``image * (1 - w) + value * w``. The
appearances follow the textbook CT pattern of each lesion (portal-venous phase):

- cyst: round, sharp margin, homogeneous, fluid-dark;
- metastasis: irregular, ill-defined margin, heterogeneous hypodense center with an enhancing rim (target sign);
- hemangioma: lobulated, moderately hypodense, with discontinuous peripheral nodular enhancement (bright spots).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._shapes import (Ellipsoids, ellipsoid_distance, pick_voxels, radial_sample, random_rotations,
                      random_unit_vectors, smooth_field, soft_inside, sphere_distance)

if TYPE_CHECKING:
    from .lesions import LesionConfig

__all__ = ["render_abdomen", "place_lesions", "render_cyst", "render_metastasis", "render_hemangioma", "RENDERERS"]

_AIR = 0.02


def _per_axis(a: np.ndarray, ndim: int) -> np.ndarray:
    return a.reshape((-1,) + (1,) * ndim)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size).astype(np.float32)


def render_abdomen(rng: np.random.Generator, n: int, shape: tuple[int, ...], cfg: LesionConfig):
    """Zoomed view of one organ inside the body outline.

    Returns ``image`` (N, *S) float32, the organ weight (N, *S), the organ ellipsoids (without their boundary
    perturbation), the per-sample organ intensity (N,) and the organ's normalized distance map (N, *S).
    """
    ndim, s = len(shape), np.asarray(shape, dtype=np.float32)
    center = (s - 1) / 2 + _uniform(rng, (-0.03, 0.03), (n, ndim)) * s
    body = Ellipsoids(center, _uniform(rng, cfg.body_radius, (n, ndim)) * s, random_rotations(rng, n, ndim, 0.2))
    body_w = soft_inside(body.distance(shape), body.radii.mean(1), 0.8)
    organ = Ellipsoids(center + _uniform(rng, (-0.04, 0.04), (n, ndim)) * s,
                       _uniform(rng, cfg.organ_radius, (n, ndim)) * s, random_rotations(rng, n, ndim))
    wobble = 1.0 + 0.06 * smooth_field(rng, n, shape, 0.1 * float(s.min()))
    d_organ = organ.distance(shape, taper=_uniform(rng, (0.0, 0.35), n)) * wobble
    organ_w = soft_inside(d_organ, organ.radii.min(1), 0.7) * body_w
    body_level = _per_axis(_uniform(rng, cfg.body_intensity, n), ndim)
    organ_level = _uniform(rng, cfg.organ_intensity, n)
    texture = _per_axis(_uniform(rng, cfg.texture_std, n), ndim)
    fat = body_level + 0.02 * smooth_field(rng, n, shape, 1.5)
    parenchyma = _per_axis(organ_level, ndim) + texture * smooth_field(rng, n, shape, 1.0)
    image = _AIR * (1 - body_w) + fat * body_w
    image = image * (1 - organ_w) + parenchyma * organ_w
    return image.astype(np.float32), organ_w, organ, organ_level, d_organ


def place_lesions(rng: np.random.Generator, d_organ: np.ndarray, organ: Ellipsoids,
                  radius: np.ndarray) -> np.ndarray:
    """(N, D) lesion centers: a voxel of each organ at least ``radius + 1`` voxels inside its (perturbed) surface."""
    return pick_voxels(rng, d_organ, 1.0 - (radius + 1.0) / organ.radii.min(1))


def render_cyst(rng, shape, centers, radius, organ_level, cfg):
    """Round (mild anisotropy), sharp edge (0.4 voxel), homogeneous fluid density."""
    n, ndim = centers.shape
    radii = radius[:, None] * _uniform(rng, (0.85, 1.15), (n, ndim))
    d = ellipsoid_distance(shape, centers, radii, random_rotations(rng, n, ndim))
    w = soft_inside(d, radius, 0.4)
    value = _per_axis(organ_level - _uniform(rng, cfg.cyst_contrast, n), ndim)
    return w, np.broadcast_to(value, w.shape)


def render_metastasis(rng, shape, centers, radius, organ_level, cfg):
    """Irregular outline (radius modulated by a random field), blurred edge, mottled dark core, bright rim."""
    n, ndim = centers.shape
    radii = radius[:, None] * _uniform(rng, (0.75, 1.25), (n, ndim))
    d = ellipsoid_distance(shape, centers, radii, random_rotations(rng, n, ndim))
    field = smooth_field(rng, n, shape, max(1.0, 0.35 * float(np.median(radius))))
    d = d * (1.0 + 0.22 * np.clip(radial_sample(field, centers, radius), -2.0, 2.0))
    w = soft_inside(d, radius, _uniform(rng, (1.0, 1.8), n))
    core = _per_axis(organ_level - _uniform(rng, cfg.metastasis_contrast, n), ndim)
    core = core + 0.05 * smooth_field(rng, n, shape, 0.8)
    rim_level = _per_axis(organ_level + _uniform(rng, cfg.metastasis_rim, n), ndim)
    ring = np.exp(-(((d - 0.8) / 0.16) ** 2))
    return w, core * (1 - ring) + rim_level * ring


def render_hemangioma(rng, shape, centers, radius, organ_level, cfg, lobes: int = 4, nodules: int = 6):
    """Central blob plus 2-4 offset lobes, sharp edge; 3-6 separate bright nodules just inside the periphery."""
    n, ndim = centers.shape
    d = sphere_distance(shape, centers, 0.72 * radius)
    n_lobes = rng.integers(2, lobes + 1, n)
    for k in range(lobes):
        offset = random_unit_vectors(rng, n, ndim) * (radius * _uniform(rng, (0.35, 0.5), n))[:, None]
        lobe = sphere_distance(shape, centers + offset, radius * _uniform(rng, (0.45, 0.6), n))
        d = np.where(_per_axis(k < n_lobes, ndim), np.minimum(d, lobe), d)
    w = soft_inside(d, 0.6 * radius, 0.6)
    body = _per_axis(organ_level - _uniform(rng, cfg.hemangioma_contrast, n), ndim)
    body = body + 0.015 * smooth_field(rng, n, shape, 1.0)
    spots = np.zeros_like(w)
    n_spots = rng.integers(3, nodules + 1, n)
    spot_r = np.maximum(1.1, 0.2 * radius)
    for k in range(nodules):
        where = centers + random_unit_vectors(rng, n, ndim) * (radius * _uniform(rng, (0.55, 0.75), n))[:, None]
        spot = soft_inside(sphere_distance(shape, where, spot_r), spot_r, 0.5)
        spots = np.where(_per_axis(k < n_spots, ndim), np.maximum(spots, spot), spots)
    bright = _per_axis(organ_level + _uniform(rng, cfg.hemangioma_nodule, n), ndim)
    return w, body * (1 - spots) + bright * spots


RENDERERS = {"cyst": render_cyst, "metastasis": render_metastasis, "hemangioma": render_hemangioma}
