"""Synthetic lesion classification: cysts, metastases and hemangiomas on an organ-like background, 2D or 3D.

No downloads and deterministic by seed. Every image comes with its lesion mask and organ mask, so the same sets
serve classification, anomaly detection (``make_healthy`` gives lesion-free images of the same background
distribution) and lesion synthesis (cut a lesion by its mask, paste it into a healthy organ).

Appearance per class (see ``_lesion_render``): cyst = round, sharp, homogeneous, dark; metastasis = irregular,
ill-defined, heterogeneous with a bright rim (target sign); hemangioma = lobulated with peripheral nodular bright
spots. Size, position, shape and contrast vary within the ranges of ``LesionConfig``, so the classes overlap in any
single simple statistic and a CNN has to look at shape and texture together.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_count, check_range, spatial_shape
from ._lesion_render import RENDERERS, place_lesions, render_abdomen
from ._shapes import add_noise, polynomial_bias
from .arrays import ArrayDataset, split_indices

__all__ = ["LESION_CLASSES", "HEALTHY", "LesionConfig", "LesionSet", "make_lesion_classification", "make_healthy"]

LESION_CLASSES = ("cyst", "metastasis", "hemangioma")
HEALTHY = "healthy"  # always the last class index (3), so lesion labels do not move when it is added
_ALL_CLASSES = LESION_CLASSES + (HEALTHY,)
_MIN_SIZE = 24  # below this a lesion is a handful of voxels and its type is no longer visible


@dataclass
class LesionConfig:
    """Ranges (low, high) sampled uniformly per image. Radii are fractions of the smallest image axis; intensities
    and contrasts are on the image's [0, 1] scale (organ about 0.5-0.62, like soft tissue on a CT window)."""

    body_radius: tuple[float, float] = (0.44, 0.49)
    organ_radius: tuple[float, float] = (0.28, 0.36)
    body_intensity: tuple[float, float] = (0.25, 0.35)
    organ_intensity: tuple[float, float] = (0.5, 0.62)
    texture_std: tuple[float, float] = (0.015, 0.035)  # organ parenchyma texture
    lesion_radius: tuple[float, float] = (0.09, 0.16)
    cyst_contrast: tuple[float, float] = (0.22, 0.38)  # cyst is this much darker than the organ
    metastasis_contrast: tuple[float, float] = (0.12, 0.28)  # core darker than the organ
    metastasis_rim: tuple[float, float] = (0.08, 0.2)  # rim brighter than the organ
    hemangioma_contrast: tuple[float, float] = (0.1, 0.22)
    hemangioma_nodule: tuple[float, float] = (0.22, 0.4)  # nodules brighter than the organ
    noise_std: tuple[float, float] = (0.015, 0.04)
    bias_strength: float = 0.08  # multiplicative shading, exp(+-strength)

    def validate(self) -> "LesionConfig":
        for f in dataclasses.fields(self):
            if f.name != "bias_strength":
                check_range("LesionConfig", f.name, getattr(self, f.name), 0.0, 1.0)
        if self.body_radius[0] <= self.organ_radius[1]:
            raise ValueError(f"LesionConfig.organ_radius {self.organ_radius} must stay inside body_radius "
                             f"{self.body_radius} (largest organ < smallest body)")
        if self.lesion_radius[1] > 0.6 * self.organ_radius[0]:
            raise ValueError(f"LesionConfig.lesion_radius upper bound {self.lesion_radius[1]} must be <= 0.6 x the "
                             f"smallest organ_radius ({0.6 * self.organ_radius[0]:.3f}) so lesions fit in the organ")
        if self.lesion_radius[0] <= 0:
            raise ValueError(f"LesionConfig.lesion_radius must be > 0, got {self.lesion_radius}")
        if not 0.0 <= float(self.bias_strength) <= 1.0:
            raise ValueError(f"LesionConfig.bias_strength must be in [0, 1], got {self.bias_strength!r}")
        return self


@dataclass
class LesionSet:
    """Images with one lesion each (or none: class ``healthy``), their masks and labels, as numpy arrays."""

    images: np.ndarray  # (N, 1, *spatial) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64, index into class_names
    lesion_masks: np.ndarray  # (N, *spatial) bool; all False for healthy images
    organ_masks: np.ndarray  # (N, *spatial) bool; contains the lesion
    class_names: tuple[str, ...]
    config: LesionConfig = field(default_factory=LesionConfig)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}

    def subset(self, index) -> "LesionSet":
        index = np.asarray(index)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index],
                                   lesion_masks=self.lesion_masks[index], organ_masks=self.organ_masks[index])

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["LesionSet", "LesionSet"]:
        """(train, test), stratified by class."""
        train, test = split_indices(self.labels, test_fraction, seed)
        return self.subset(train), self.subset(test)

    def dataset(self, target: str = "label", transform=None) -> ArrayDataset:
        """Torch dataset of (image, target): ``target`` is "label", "lesion_mask" or "organ_mask"."""
        targets = {"label": self.labels, "lesion_mask": self.lesion_masks, "organ_mask": self.organ_masks}
        if target not in targets:
            raise ValueError(f"target must be one of {sorted(targets)}, got {target!r}")
        return ArrayDataset(self.images, targets[target], transform)


def _generate(class_name: str, n: int, shape: tuple[int, ...], cfg: LesionConfig, seed_seq: np.random.SeedSequence):
    """n images of one class: background, lesion (unless healthy), shading, noise."""
    rng = np.random.default_rng(seed_seq)
    image, organ_w, organ, organ_level, d_organ = render_abdomen(rng, n, shape, cfg)
    lesion = np.zeros((n,) + shape, dtype=bool)
    if class_name != HEALTHY:
        radius = rng.uniform(*cfg.lesion_radius, n).astype(np.float32) * min(shape)
        centers = place_lesions(rng, d_organ, organ, radius)
        w, value = RENDERERS[class_name](rng, shape, centers, radius, organ_level, cfg)
        w = w * organ_w  # a lesion never spills out of its organ
        image = image * (1 - w) + value * w
        lesion = w > 0.5
    image = image * polynomial_bias(rng, n, shape, cfg.bias_strength)
    image = add_noise(rng, image, rng.uniform(*cfg.noise_std, n), "gaussian")
    image = np.clip(image, 0.0, 1.0).astype(np.float32)[:, None]  # (N, 1, *S)
    return image, lesion, (organ_w > 0.5) | lesion


def _assemble(counts: dict[str, int], shape, cfg, seed: int, class_names: tuple[str, ...]) -> LesionSet:
    # One child seed per class: a class's images do not depend on which other classes or how many are generated.
    children = np.random.SeedSequence(seed).spawn(len(_ALL_CLASSES) + 1)
    parts = [(_ALL_CLASSES.index(name), _generate(name, n, shape, cfg, children[_ALL_CLASSES.index(name)]))
             for name, n in counts.items() if n > 0]
    images = np.concatenate([p[1][0] for p in parts]) if parts else np.zeros((0, 1) + shape, np.float32)
    lesion = np.concatenate([p[1][1] for p in parts]) if parts else np.zeros((0,) + shape, bool)
    organ = np.concatenate([p[1][2] for p in parts]) if parts else np.zeros((0,) + shape, bool)
    labels = np.concatenate([np.full(counts[_ALL_CLASSES[k]], k, np.int64) for k, _ in parts]) if parts \
        else np.zeros(0, np.int64)
    order = np.random.default_rng(children[-1]).permutation(len(labels))  # classes interleaved, not in blocks
    return LesionSet(images[order], labels[order], lesion[order], organ[order], class_names, cfg)


def make_lesion_classification(n_per_class: int = 200, size: int | tuple[int, ...] = 64, ndim: int = 2,
                               seed: int = 0, *, include_healthy: bool = False,
                               config: LesionConfig | None = None) -> LesionSet:
    """Balanced set of ``n_per_class`` images per lesion type, shuffled, deterministic for a given ``seed``.

    ``size``: an int (square/cube with ``ndim`` axes) or a tuple of 2 or 3 ints. ``include_healthy`` adds
    ``n_per_class`` lesion-free images as class 3 ("healthy"); lesion classes keep indices 0-2.
    """
    n_per_class = check_count("n_per_class", n_per_class, 1)
    shape = spatial_shape(size, None if isinstance(size, (tuple, list)) else ndim, _MIN_SIZE)
    cfg = (config or LesionConfig()).validate()
    names = _ALL_CLASSES if include_healthy else LESION_CLASSES
    return _assemble({name: n_per_class for name in names}, shape, cfg, seed, names)


def make_healthy(n: int, size: int | tuple[int, ...] = 64, ndim: int = 2, seed: int = 0, *,
                 config: LesionConfig | None = None) -> LesionSet:
    """``n`` lesion-free images from the same background distribution as ``make_lesion_classification``.

    Labels are 3 ("healthy") with the full class list, so healthy and lesion sets can be concatenated. With the
    same ``seed`` and ``n == n_per_class`` these are the healthy images of ``make_lesion_classification(...,
    include_healthy=True)`` (in another order): each class draws from its own seed stream.
    """
    n = check_count("n", n, 1)
    shape = spatial_shape(size, None if isinstance(size, (tuple, list)) else ndim, _MIN_SIZE)
    cfg = (config or LesionConfig()).validate()
    return _assemble({HEALTHY: n}, shape, cfg, seed, _ALL_CLASSES)
