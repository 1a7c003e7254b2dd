"""Paired cross-modality images: an MR-like source and a CT-like target of the same synthetic anatomy (2D).

Why: cross-modality synthesis (Nie et al. 2017, MR -> CT) needs voxel-aligned pairs, which are rare in practice
(two scans, a registration). Rendering one anatomy twice gives exact pairs, and the tissue table below makes the
task need context: no single intensity mapping turns the MR into the CT.

Anatomy (axial abdomen-like slice, anterior at the top, the patient's right on the image left): a body outline
with a subcutaneous fat ring, a soft-tissue (muscle) compartment, a liver-like organ with 0-2 lesions, a vertebral
body in the posterior midline, 2-4 ribs along the inside of the fat ring and, in half of the images, a bowel-gas
pocket. ``tissues`` labels every pixel with the tissue drawn last there (index into ``TISSUES``).

The contrast relation (``MR_SIGNAL``, ``CT_HU``):

- CT: Hounsfield units, normalised ``v = (HU + 1000) / 2000`` (air 0, water 0.5, dense bone about 0.95); bone is
  the brightest tissue, fat darker than every soft tissue; a little texture and 5-15 HU noise.
- MR (T1-weighted-like): fat is the brightest tissue; cortical bone has no signal, so bone is dark -- as dark as
  air, which only context (a disk in the posterior midline or along the fat ring, versus gas elsewhere or
  outside the body) tells apart. Each image scales every tissue by its own factor (``mr_jitter``: MR has no
  absolute units), then a smooth multiplicative bias field (coil shading) and Rician noise.

So the tissue order differs between the modalities (MR: fat > organ > soft tissue > lesion > bone ~ air; CT:
bone > organ > soft tissue > lesion > fat > air), the relation the tests check.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_count, check_range, spatial_shape
from ._shapes import Ellipsoids, add_noise, pick_voxels, polynomial_bias, random_rotations, smooth_field, \
    soft_inside, sphere_distance
from .arrays import ArrayDataset, split_indices

__all__ = ["TISSUES", "CT_HU", "MR_SIGNAL", "PairedConfig", "PairedSet", "make_paired_modalities", "hu_to_unit",
           "unit_to_hu"]

TISSUES = ("air", "fat", "soft_tissue", "organ", "lesion", "bone")
CT_HU = {"air": -1000.0, "fat": -100.0, "soft_tissue": 40.0, "organ": 60.0, "lesion": 15.0, "bone": 900.0}
MR_SIGNAL = {"air": 0.0, "fat": 0.9, "soft_tissue": 0.35, "organ": 0.5, "lesion": 0.22, "bone": 0.04}
_MIN_SIZE = 32
_TEXTURE_MR, _TEXTURE_HU = 0.03, 8.0  # organ / soft-tissue texture: one field, seen by both modalities


def hu_to_unit(hu):
    """Hounsfield units -> the target's [0, 1] scale: ``(HU + 1000) / 2000``."""
    return (np.asarray(hu, dtype=np.float64) + 1000.0) / 2000.0


def unit_to_hu(v):
    """The target's [0, 1] scale -> Hounsfield units (a mean absolute error in HU: ``2000 * MAE``)."""
    return np.asarray(v, dtype=np.float64) * 2000.0 - 1000.0


@dataclass
class PairedConfig:
    """Generation settings; pairs are (low, high) ranges sampled uniformly per image."""

    lesions: tuple[int, int] = (0, 2)
    ribs: tuple[int, int] = (2, 4)
    gas_probability: float = 0.5
    mr_jitter: float = 0.08  # per image and tissue, MR signal times U(1 - j, 1 + j)
    mr_bias_strength: float = 0.3  # multiplicative field spans about exp(-s)..exp(s)
    mr_noise_std: tuple[float, float] = (0.015, 0.035)  # Rician
    ct_noise_hu: tuple[float, float] = (5.0, 15.0)  # Gaussian, in HU

    def validate(self) -> "PairedConfig":
        for name, hi in (("lesions", 2), ("ribs", 4)):
            value = check_range("PairedConfig", name, getattr(self, name), 0, hi)
            if any(v != int(v) for v in value):
                raise TypeError(f"PairedConfig.{name} must be an integer range, got {getattr(self, name)!r}")
        check_range("PairedConfig", "mr_noise_std", self.mr_noise_std, 0.0, 0.5)
        check_range("PairedConfig", "ct_noise_hu", self.ct_noise_hu, 0.0, 200.0)
        for name, hi in (("gas_probability", 1.0), ("mr_jitter", 0.5), ("mr_bias_strength", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= hi:
                raise ValueError(f"PairedConfig.{name} must be a number in [0, {hi}], got {value!r}")
        return self


@dataclass
class PairedSet:
    """Source (MR-like) and target (CT-like) images of one anatomy each, with the tissue label maps."""

    source: np.ndarray  # (N, 1, H, W) float32, MR signal (about [0, 1.2])
    target: np.ndarray  # (N, 1, H, W) float32, CT in (HU + 1000) / 2000
    tissues: np.ndarray  # (N, H, W) int64, index into tissue_names
    tissue_names: tuple[str, ...] = TISSUES
    config: PairedConfig = field(default_factory=PairedConfig)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape[2:])

    def subset(self, index) -> "PairedSet":
        index = np.asarray(index)
        return dataclasses.replace(self, source=self.source[index], target=self.target[index],
                                   tissues=self.tissues[index])

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["PairedSet", "PairedSet"]:
        """(train, test), stratified by whether an image holds a lesion."""
        has_lesion = (self.tissues == TISSUES.index("lesion")).reshape(len(self), -1).any(1)
        train, test = split_indices(has_lesion, test_fraction, seed)
        return self.subset(train), self.subset(test)

    def dataset(self) -> ArrayDataset:
        """Torch dataset of (source (1, H, W), target (1, H, W)) pairs, as ``step='paired'`` GAN training takes."""
        return ArrayDataset(self.source, self.target)

    def tissue_means(self, modality: str) -> dict[str, float]:
        """Mean intensity per tissue over the whole set (``modality`` "source" or "target"); NaN if absent."""
        if modality not in ("source", "target"):
            raise ValueError(f"modality must be 'source' or 'target', got {modality!r}")
        images = getattr(self, modality)[:, 0]
        return {name: float(images[self.tissues == k].mean()) if (self.tissues == k).any() else float("nan")
                for k, name in enumerate(self.tissue_names)}


# --- rendering ---------------------------------------------------------------------------------------------------
def _per(a, ndim: int = 2) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).reshape((-1,) + (1,) * ndim)


def _ellipses(rng, n, s, frac_center, frac_radii, jitter=0.03, max_angle=0.2) -> Ellipsoids:
    centers = (np.asarray(frac_center, np.float32) + rng.uniform(-jitter, jitter, (n, 2))) * s
    radii = np.asarray(frac_radii, np.float32) * rng.uniform(0.88, 1.12, (n, 2)) * s
    return Ellipsoids(centers.astype(np.float32), radii.astype(np.float32), random_rotations(rng, n, 2, max_angle))


def _body_layers(rng, n, shape):
    """[(tissue, weight)] of the body (fat), its muscle compartment and the liver-like organ; the organ's
    distance map and smallest radius (where lesions go)."""
    s = np.asarray(shape, np.float32)
    body = _ellipses(rng, n, s, (0.5, 0.5), (0.4, 0.46), max_angle=0.15)
    inner = Ellipsoids(body.centers, body.radii * rng.uniform(0.8, 0.88, (n, 1)).astype(np.float32), body.rotations)
    organ = _ellipses(rng, n, s, (0.42, 0.36), (0.2, 0.17), max_angle=0.4)
    d_organ = organ.distance(shape, taper=rng.uniform(0.1, 0.35, n))
    body_w = soft_inside(body.distance(shape), body.radii.min(1), 0.7)
    inner_w = soft_inside(inner.distance(shape), inner.radii.min(1), 0.7)
    organ_w = soft_inside(d_organ, organ.radii.min(1), 0.7) * inner_w
    return [("fat", body_w), ("soft_tissue", inner_w), ("organ", organ_w)], d_organ, organ.radii.min(1), inner


def _disks(shape, centers, radii, active, edge=0.6) -> np.ndarray:
    """(N, H, W) weights of one disk per sample (zero where ``active`` is False)."""
    return soft_inside(sphere_distance(shape, centers, radii), radii, edge) * _per(active)


def _lesion_layers(rng, n, shape, d_organ, organ_radius, cfg: PairedConfig):
    count = rng.integers(int(cfg.lesions[0]), int(cfg.lesions[1]) + 1, n)
    layers = []
    for k in range(int(cfg.lesions[1])):
        radius = np.maximum(rng.uniform(0.03, 0.06, n) * min(shape), 1.5).astype(np.float32)
        centers = pick_voxels(rng, d_organ, 1.0 - (radius + 1.0) / organ_radius)
        layers.append(("lesion", _disks(shape, centers, radius, k < count)))
    return layers


def _bone_and_gas_layers(rng, n, shape, inner: Ellipsoids, cfg: PairedConfig):
    """The vertebral body (posterior midline), ribs just inside the fat ring and an optional gas pocket."""
    s, smallest = np.asarray(shape, np.float32), float(min(shape))
    spine_c = (np.asarray([0.74, 0.5], np.float32) + rng.uniform(-0.02, 0.02, (n, 2))) * s
    layers = [("bone", _disks(shape, spine_c, rng.uniform(0.065, 0.085, n).astype(np.float32) * smallest,
                              np.ones(n, bool)))]
    ribs = rng.integers(int(cfg.ribs[0]), int(cfg.ribs[1]) + 1, n)
    sides = np.resize(np.array([-1.0, 1.0], np.float32), max(int(cfg.ribs[1]), 1))
    for k in range(int(cfg.ribs[1])):
        angle = sides[k] * rng.uniform(0.45, 1.35, n)  # from the posterior direction, one side then the other
        direction = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)  # (N, 2) rows down, cols right
        along = np.einsum("nij,nj->ni", inner.rotations.transpose(0, 2, 1), direction)  # in the ellipse's frame
        reach = 1.0 / np.sqrt(((along / inner.radii) ** 2).sum(1))  # distance to the inner boundary
        radius = rng.uniform(0.025, 0.035, n).astype(np.float32) * smallest
        centers = inner.centers + direction * (reach - 1.6 * radius)[:, None]
        layers.append(("bone", _disks(shape, centers, radius, k < ribs)))
    gas_c = (np.asarray([0.45, 0.66], np.float32) + rng.uniform(-0.05, 0.05, (n, 2))) * s
    gas_r = rng.uniform(0.035, 0.06, n).astype(np.float32) * smallest
    layers.append(("air", _disks(shape, gas_c, gas_r, rng.random(n) < cfg.gas_probability)))
    return layers


def _composite(layers, values: dict[str, np.ndarray], texture: np.ndarray, texture_scale: float) -> np.ndarray:
    """Paint the layers in order over air: ``image * (1 - w) + value * w`` (partial volume at every edge)."""
    image = np.broadcast_to(values["air"], layers[0][1].shape).astype(np.float32)
    for tissue, w in layers:
        value = values[tissue]
        if tissue in ("soft_tissue", "organ"):
            value = value + texture_scale * texture
        image = image * (1 - w) + value * w
    return image


def _render(rng: np.random.Generator, n: int, shape: tuple[int, int], cfg: PairedConfig):
    body, d_organ, organ_radius, inner = _body_layers(rng, n, shape)
    layers = body + _lesion_layers(rng, n, shape, d_organ, organ_radius, cfg) + \
        _bone_and_gas_layers(rng, n, shape, inner, cfg)
    texture = smooth_field(rng, n, shape, 1.0)
    jitter = {t: _per(rng.uniform(1 - cfg.mr_jitter, 1 + cfg.mr_jitter, n)) for t in TISSUES}
    mr = _composite(layers, {t: MR_SIGNAL[t] * jitter[t] for t in TISSUES}, texture, _TEXTURE_MR)
    mr = mr * polynomial_bias(rng, n, shape, cfg.mr_bias_strength)
    mr = add_noise(rng, mr, rng.uniform(*cfg.mr_noise_std, n), "rician")
    ct = _composite(layers, {t: _per(hu_to_unit(CT_HU[t])) for t in TISSUES}, texture, _TEXTURE_HU / 2000.0)
    ct = add_noise(rng, ct, rng.uniform(*cfg.ct_noise_hu, n) / 2000.0, "gaussian")
    labels = np.zeros((n,) + shape, np.int64)
    for tissue, w in layers:
        labels = np.where(w > 0.5, TISSUES.index(tissue), labels)
    return mr.astype(np.float32)[:, None], np.clip(ct, 0.0, 1.0).astype(np.float32)[:, None], labels


def make_paired_modalities(n: int = 64, size: int | tuple[int, int] = 64, seed: int = 0, *,
                           config: PairedConfig | None = None) -> PairedSet:
    """``n`` (MR-like, CT-like) pairs of ``size`` (an int: square; or (H, W), each >= 32), deterministic for a
    given ``seed``; see the module docstring for the anatomy and the contrast relation."""
    n = check_count("n", n, 1)
    shape = spatial_shape(size, None if isinstance(size, (tuple, list)) else 2, _MIN_SIZE)
    if len(shape) != 2:
        raise ValueError(f"make_paired_modalities renders 2D slices: size must be an int or (H, W), got {size!r}")
    cfg = (config or PairedConfig()).validate()
    source, target, tissues = _render(np.random.default_rng(seed), n, shape, cfg)
    return PairedSet(source, target, tissues, TISSUES, cfg)
