"""Synthetic segmentation phantoms: body, one or two organs (liver- and kidney-like), 0-3 lesions, 2D or 3D.

Masks label every voxel 0 background, 1 organ, 2 lesion. The image model is the one segmentation has to cope with:
partial-volume edges, organ texture, lesions darker or brighter than their organ, Gaussian or Rician noise and a
smooth multiplicative bias field (intensity inhomogeneity). Defaults are tuned so a small U-Net learns the task on
a CPU in well under a minute at 64x64 or 96x96.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_count, check_range, spatial_shape
from ._shapes import (Ellipsoids, add_noise, ellipsoid_distance, pick_voxels, polynomial_bias, random_rotations,
                      smooth_field, soft_inside)
from .arrays import ArrayDataset, split_indices

__all__ = ["PHANTOM_CLASSES", "PhantomConfig", "PhantomSet", "make_phantoms"]

PHANTOM_CLASSES = ("background", "organ", "lesion")
_MIN_SIZE = 32
_AIR = 0.02


@dataclass
class PhantomConfig:
    """Generation settings; pairs are (low, high) ranges sampled uniformly per image (per lesion for lesions).

    Lesion radii are fractions of the smallest in-plane axis; intensities are on a [0, 1] scale.
    """

    organs: tuple[int, int] = (1, 2)  # liver-like always; kidney-like in addition when 2 is drawn
    lesions: tuple[int, int] = (0, 3)  # lesions per image, spread over the organs
    lesion_radius: tuple[float, float] = (0.04, 0.09)
    lesion_contrast: tuple[float, float] = (0.15, 0.3)  # absolute difference from the organ
    lesion_polarity: str = "both"  # "hypo" (darker), "hyper" (brighter) or "both" (either, per lesion)
    body_intensity: tuple[float, float] = (0.25, 0.35)
    organ_intensity: tuple[float, float] = (0.55, 0.7)
    texture_std: float = 0.02
    noise: str = "gaussian"  # "gaussian", "rician" (MR magnitude images) or "none"
    noise_std: tuple[float, float] = (0.02, 0.05)
    bias_strength: float = 0.2  # multiplicative field spans about exp(-s)..exp(s)
    spacing: tuple[float, ...] | None = None  # voxel size in mm per axis, recorded only; default 1.0 each

    def validate(self, ndim: int) -> "PhantomConfig":
        organs = check_range("PhantomConfig", "organs", self.organs, 1, 2)
        lesions = check_range("PhantomConfig", "lesions", self.lesions, 0, 3)
        if any(v != int(v) for v in organs + lesions):
            raise TypeError(f"PhantomConfig.organs and .lesions must be integer ranges, got {self.organs!r}, "
                            f"{self.lesions!r}")
        check_range("PhantomConfig", "lesion_radius", self.lesion_radius, 0.01, 0.15)
        for name in ("lesion_contrast", "body_intensity", "organ_intensity", "noise_std"):
            check_range("PhantomConfig", name, getattr(self, name), 0.0, 1.0)
        if self.lesion_polarity not in ("hypo", "hyper", "both"):
            raise ValueError(f"PhantomConfig.lesion_polarity must be 'hypo', 'hyper' or 'both', got "
                             f"{self.lesion_polarity!r}")
        if self.noise not in ("gaussian", "rician", "none"):
            raise ValueError(f"PhantomConfig.noise must be 'gaussian', 'rician' or 'none', got {self.noise!r}")
        for name in ("texture_std", "bias_strength"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"PhantomConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.spacing is not None and (len(self.spacing) != ndim or min(self.spacing) <= 0):
            raise ValueError(f"PhantomConfig.spacing must be {ndim} positive numbers (one per axis), got "
                             f"{self.spacing!r}")
        return self


@dataclass
class PhantomSet:
    """Phantom images and their label masks as numpy arrays, with the facts a pipeline needs to use them."""

    images: np.ndarray  # (N, 1, *spatial) float32, about [0, 1]
    masks: np.ndarray  # (N, *spatial) int64: 0 background, 1 organ, 2 lesion
    lesion_counts: np.ndarray  # (N,) int64, lesions drawn per image (0 for a healthy phantom)
    spacing: tuple[float, ...]
    class_names: tuple[str, ...] = PHANTOM_CLASSES
    config: PhantomConfig = field(default_factory=PhantomConfig)

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    @property
    def organ_masks(self) -> np.ndarray:
        """(N, *spatial) bool: organ including its lesions (where lesion synthesis may paste)."""
        return self.masks >= 1

    @property
    def lesion_masks(self) -> np.ndarray:
        return self.masks == 2

    def subset(self, index) -> "PhantomSet":
        index = np.asarray(index)
        return dataclasses.replace(self, images=self.images[index], masks=self.masks[index],
                                   lesion_counts=self.lesion_counts[index])

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["PhantomSet", "PhantomSet"]:
        """(train, test), stratified by whether a phantom has lesions."""
        train, test = split_indices(self.lesion_counts > 0, test_fraction, seed)
        return self.subset(train), self.subset(test)

    def dataset(self, transform=None) -> ArrayDataset:
        """Torch dataset of (image (1, *spatial) float32, mask (*spatial) int64)."""
        return ArrayDataset(self.images, self.masks, transform)


def _layout(rng: np.random.Generator, n: int, shape: tuple[int, ...], frac_center, frac_radii, max_angle: float):
    """Ellipsoids placed at fractions of the image (in-plane axes last), jittered by a few percent."""
    ndim, s = len(shape), np.asarray(shape, dtype=np.float32)
    frac_center = np.asarray(([0.5] if ndim == 3 else []) + list(frac_center), dtype=np.float32)
    frac_radii = np.asarray(([frac_radii[0] * 1.2] if ndim == 3 else []) + list(frac_radii), dtype=np.float32)
    centers = (frac_center + rng.uniform(-0.03, 0.03, (n, ndim))) * s
    radii = frac_radii * rng.uniform(0.85, 1.15, (n, ndim)) * s
    return Ellipsoids(centers.astype(np.float32), radii.astype(np.float32),
                      random_rotations(rng, n, ndim, max_angle))


def _organs(rng: np.random.Generator, n: int, shape: tuple[int, ...], n_organs: np.ndarray):
    """(N, *S) weights of the liver-like (tapered, wobbly) and kidney-like (bean: hilum cut out) organs.

    Image left is the patient's right, as radiologists view axial slices: the liver sits there, the kidney opposite.
    """
    ndim, smallest = len(shape), float(min(shape[-2:]))
    liver = _layout(rng, n, shape, (0.45, 0.34), (0.24, 0.2), 0.35)
    d_liver = liver.distance(shape, taper=rng.uniform(0.1, 0.4, n)) * (
        1.0 + 0.05 * smooth_field(rng, n, shape, 0.1 * smallest))
    kidney = _layout(rng, n, shape, (0.58, 0.72), (0.13, 0.075), 0.35)
    d_kidney = kidney.distance(shape)
    hilum_center = kidney.centers - 0.9 * kidney.radii[:, -1:] * kidney.rotations[:, :, -1]  # medial side
    d_hilum = ellipsoid_distance(shape, hilum_center, 0.45 * kidney.radii, kidney.rotations)
    d_kidney = np.maximum(d_kidney, 2.0 - d_hilum)  # carve the hilum: inside the bean and outside the notch
    liver_w = soft_inside(d_liver, liver.radii.min(1), 0.7)
    kidney_w = soft_inside(d_kidney, kidney.radii.min(1), 0.7)
    kidney_w = kidney_w * (n_organs >= 2).reshape((-1,) + (1,) * ndim) * (1 - liver_w)
    return [(liver, d_liver, liver_w), (kidney, d_kidney, kidney_w)]


def _lesions(rng, shape, organs, n_lesions: np.ndarray, cfg: PhantomConfig):
    """(N, *S) lesion weight and signed contrast map: lesions placed inside a chosen organ, up to 3 per image."""
    n, ndim = len(n_lesions), len(shape)
    weight = np.zeros((n,) + shape, np.float32)
    contrast = np.zeros((n,) + shape, np.float32)
    for k in range(int(cfg.lesions[1])):
        active = k < n_lesions
        radius = (rng.uniform(*cfg.lesion_radius, n) * float(min(shape[-2:]))).astype(np.float32)
        radius = np.maximum(radius, 1.5)
        in_kidney = (rng.random(n) < 0.3) & (organs[1][2].reshape(n, -1).max(1) > 0.5)
        d_organ = np.where(in_kidney.reshape((-1,) + (1,) * ndim), organs[1][1], organs[0][1])
        min_radius = np.where(in_kidney, organs[1][0].radii.min(1), organs[0][0].radii.min(1))
        radius = np.minimum(radius, 0.5 * min_radius)  # a small organ gets a small lesion, never one that fills it
        centers = pick_voxels(rng, d_organ, 1.0 - (radius + 1.0) / min_radius)
        radii = radius[:, None] * rng.uniform(0.8, 1.2, (n, ndim)).astype(np.float32)
        d = ellipsoid_distance(shape, centers, radii, random_rotations(rng, n, ndim))
        w = soft_inside(d, radius, 0.6) * active.reshape((-1,) + (1,) * ndim)
        sign = {"hypo": -1.0, "hyper": 1.0}.get(cfg.lesion_polarity)
        sign = np.full(n, sign) if sign is not None else rng.choice([-1.0, 1.0], n)
        c = (sign * rng.uniform(*cfg.lesion_contrast, n)).astype(np.float32).reshape((-1,) + (1,) * ndim)
        contrast = np.where(w > weight, c, contrast)
        weight = np.maximum(weight, w)
    return weight, contrast


def _render(rng: np.random.Generator, n: int, shape: tuple[int, ...], cfg: PhantomConfig):
    ndim = len(shape)
    per = (-1,) + (1,) * ndim
    n_organs = rng.integers(int(cfg.organs[0]), int(cfg.organs[1]) + 1, n)
    n_lesions = rng.integers(int(cfg.lesions[0]), int(cfg.lesions[1]) + 1, n)
    body = _layout(rng, n, shape, (0.5, 0.5), (0.36, 0.46), 0.15)
    body_w = soft_inside(body.distance(shape), body.radii.min(1), 0.8)
    organs = _organs(rng, n, shape, n_organs)
    organ_w = np.clip(organs[0][2] + organs[1][2], 0.0, 1.0) * body_w
    lesion_w, contrast = _lesions(rng, shape, organs, n_lesions, cfg)
    lesion_w = lesion_w * organ_w  # lesions never leave their organ
    body_level = rng.uniform(*cfg.body_intensity, n).astype(np.float32).reshape(per)
    organ_level = rng.uniform(*cfg.organ_intensity, n).astype(np.float32).reshape(per)
    tissue = body_level + 0.02 * smooth_field(rng, n, shape, 1.5)
    parenchyma = organ_level + cfg.texture_std * smooth_field(rng, n, shape, 1.0)
    image = _AIR * (1 - body_w) + tissue * body_w
    image = image * (1 - organ_w) + parenchyma * organ_w
    image = image * (1 - lesion_w) + (parenchyma + contrast) * lesion_w
    image = image * polynomial_bias(rng, n, shape, cfg.bias_strength)
    image = add_noise(rng, image, rng.uniform(*cfg.noise_std, n), cfg.noise)
    masks = np.where(lesion_w > 0.5, 2, np.where(organ_w > 0.5, 1, 0)).astype(np.int64)
    counts = np.where(n_lesions > 0, n_lesions, 0).astype(np.int64)
    return np.clip(image, 0.0, 1.0).astype(np.float32)[:, None], masks, counts


def make_phantoms(n: int = 64, size: int | tuple[int, ...] = (96, 96), seed: int = 0, *,
                  config: PhantomConfig | None = None, ndim: int | None = None) -> PhantomSet:
    """``n`` phantoms of ``size`` ((H, W) or (D, H, W); an int needs ``ndim``), deterministic for a given ``seed``.

    ``config=PhantomConfig(lesions=(0, 0))`` gives healthy phantoms (for anomaly detection); the organ mask
    (``masks >= 1``) is where lesion synthesis may paste lesions.
    """
    n = check_count("n", n, 1)
    shape = spatial_shape(size, ndim, _MIN_SIZE)
    cfg = (config or PhantomConfig()).validate(len(shape))
    images, masks, counts = _render(np.random.default_rng(seed), n, shape, cfg)
    spacing = tuple(float(v) for v in cfg.spacing) if cfg.spacing is not None else (1.0,) * len(shape)
    return PhantomSet(images, masks, counts, spacing, PHANTOM_CLASSES, cfg)
