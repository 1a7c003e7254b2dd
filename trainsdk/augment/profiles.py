"""Clinical limits on augmentation, and the pipeline that enforces them before the first sample is drawn.

Augmentation must only produce images that could have come from the clinic: a left-right flipped chest X-ray
shows a right-sided heart (dextrocardia), a 45-degree rotated one a patient no technician would image. A
``ClinicalProfile`` declares which transform kinds a task allows and the parameter limits; ``AugmentPipeline``
compares every transform's configured ranges (its ``policy_limits()``) with the profile at construction and raises
``AugmentationPolicyError`` naming the transform, the parameter, the configured range and the allowed one. The
transforms are frozen dataclasses, so what was validated is what runs.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ._base import Range, Transform, check_batch

__all__ = ["AugmentationPolicyError", "ClinicalProfile", "AugmentPipeline", "Compose", "TRANSFORM_KINDS",
           "get_profile", "list_profiles", "PROFILES"]

TRANSFORM_KINDS = frozenset({"affine", "noise", "gamma", "blur", "bias_field", "brightness_contrast"})
_INF = math.inf
_EPS = 1e-9  # configured 0.1 vs allowed 0.1 computed as 1 - 0.9 must pass


class AugmentationPolicyError(ValueError):
    """A transform's configuration is outside the clinical profile; ``violations`` lists each problem."""

    def __init__(self, profile: str, violations: Sequence[str]):
        self.profile = profile
        self.violations = list(violations)
        super().__init__(f"augmentation refused by clinical profile {profile!r}:\n  " + "\n  ".join(violations))


@dataclass(frozen=True)
class ClinicalProfile:
    """What a task allows. Units: degrees (rotation, per axis in 3D), fraction of the image extent per axis
    (translation), scale factor, shear factor (tan of the angle), intensities in normalized image units.
    ``allow_flip_axes`` holds x-first axis indices (0 = left-right, 1 = up-down, 2 = slice direction).
    ``allow_undeclared`` lets transforms without ``policy_limits()`` (plain callables) through unchecked."""

    name: str
    allowed_transforms: frozenset[str] = TRANSFORM_KINDS
    allow_flip_axes: tuple[int, ...] = ()
    max_rotation_deg: float = 0.0
    scale_range: Range = (1.0, 1.0)
    max_translation: float = 0.0
    max_shear: float = 0.0
    max_noise_std: float = 0.0
    gamma_range: Range = (1.0, 1.0)
    max_blur_sigma: float = 0.0
    max_bias_field: float = 0.0
    brightness_range: Range = (0.0, 0.0)
    contrast_range: Range = (1.0, 1.0)
    allow_undeclared: bool = False
    rationale: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.allowed_transforms) - TRANSFORM_KINDS
        if unknown:
            raise ValueError(f"ClinicalProfile {self.name!r}: unknown transform kinds {sorted(unknown)}; known: "
                             f"{sorted(TRANSFORM_KINDS)}")
        object.__setattr__(self, "allowed_transforms", frozenset(self.allowed_transforms))
        object.__setattr__(self, "allow_flip_axes", tuple(sorted(set(self.allow_flip_axes))))
        for name in ("scale_range", "gamma_range", "brightness_range", "contrast_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"ClinicalProfile {self.name!r}: {name} must have low <= high, got ({lo}, {hi})")

    def limits(self) -> dict[str, Any]:
        """Allowed range per parameter name, in the vocabulary of the transforms' ``policy_limits()``."""
        return {
            "rotation_deg": (-self.max_rotation_deg, self.max_rotation_deg),
            "translation": (-self.max_translation, self.max_translation),
            "scale": tuple(self.scale_range),
            "shear": (-self.max_shear, self.max_shear),
            "flip_axes": self.allow_flip_axes,
            "noise_std": (0.0, self.max_noise_std),
            "gamma": tuple(self.gamma_range),
            "blur_sigma": (0.0, self.max_blur_sigma),
            "bias_field": (-self.max_bias_field, self.max_bias_field),
            "brightness": tuple(self.brightness_range),
            "contrast": tuple(self.contrast_range),
        }

    def violations(self, transform: Any) -> list[str]:
        """Every way ``transform`` breaks this profile (empty when it complies)."""
        label = _label(transform)
        if not isinstance(transform, Transform):
            if self.allow_undeclared:
                return []
            return [f"{label}: declares no policy_limits(), so profile {self.name!r} cannot verify it (wrap it in "
                    "a Transform subclass, or use a profile with allow_undeclared=True)"]
        if transform.kind not in self.allowed_transforms:
            return [f"{label}: transform kind {transform.kind!r} is not allowed by profile {self.name!r} "
                    f"(allowed kinds: {sorted(self.allowed_transforms)})"]
        allowed, problems = self.limits(), []
        for param, configured in transform.policy_limits().items():
            if param not in allowed:
                problems.append(f"{label}: parameter {param!r} has no limit in profile {self.name!r}")
            elif param == "flip_axes":
                extra = sorted(set(configured) - set(allowed[param]))
                if extra:
                    problems.append(f"{label}: flip_axes configured {tuple(configured)} includes axis {extra} "
                                    f"(0 = left-right, 1 = up-down, 2 = slices); allowed flip axes "
                                    f"{tuple(allowed[param])}")
            elif not (configured[0] >= allowed[param][0] - _EPS and configured[1] <= allowed[param][1] + _EPS):
                problems.append(f"{label}: {param} configured range {_fmt(configured)} is outside the allowed "
                                f"{_fmt(allowed[param])}")
        return problems

    def check(self, transforms: Sequence[Any]) -> None:
        """Raise ``AugmentationPolicyError`` listing every violation of every transform."""
        problems = [p for t in transforms for p in self.violations(t)]
        if problems:
            raise AugmentationPolicyError(self.name, problems)


def _label(t: Any) -> str:
    return type(t).__name__ if isinstance(t, Transform) else getattr(t, "__name__", type(t).__name__)


def _fmt(r: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in r) + ")"


PROFILES: dict[str, ClinicalProfile] = {p.name: p for p in (
    ClinicalProfile(
        "chest_xray", allowed_transforms=frozenset({"affine", "noise", "gamma", "blur", "brightness_contrast"}),
        allow_flip_axes=(), max_rotation_deg=15.0, scale_range=(0.9, 1.1), max_translation=0.1, max_shear=0.05,
        max_noise_std=0.05, gamma_range=(0.7, 1.5), max_blur_sigma=1.0, brightness_range=(-0.1, 0.1),
        contrast_range=(0.8, 1.2),
        rationale="laterality is diagnostic (heart on the left, dextrocardia, lesion side): no flips; patients are "
                  "imaged upright, within +-15 degrees and +-10% magnification"),
    ClinicalProfile(
        "brain_mri", allow_flip_axes=(), max_rotation_deg=10.0, scale_range=(0.9, 1.1), max_translation=0.1,
        max_shear=0.05, max_noise_std=0.05, gamma_range=(0.7, 1.5), max_blur_sigma=1.0, max_bias_field=0.5,
        brightness_range=(-0.1, 0.1), contrast_range=(0.8, 1.2),
        rationale="hemispheric side of a finding matters (language areas, stroke side): no flips; head fixed in the "
                  "coil, small rotations; bias field is a real MRI artefact"),
    ClinicalProfile(
        "abdomen_ct", allowed_transforms=frozenset({"affine", "noise", "blur", "brightness_contrast"}),
        allow_flip_axes=(), max_rotation_deg=10.0, scale_range=(0.9, 1.1), max_translation=0.1, max_shear=0.05,
        max_noise_std=0.03, max_blur_sigma=1.0, brightness_range=(-0.05, 0.05), contrast_range=(0.9, 1.1),
        rationale="situs matters (liver right, spleen left): no flips; Hounsfield units are quantitative: no gamma, "
                  "no bias field, small brightness/contrast only"),
    ClinicalProfile(
        "dermoscopy", allow_flip_axes=(0, 1), max_rotation_deg=180.0, scale_range=(0.8, 1.25), max_translation=0.2,
        max_shear=0.1, max_noise_std=0.05, gamma_range=(0.7, 1.5), max_blur_sigma=1.5, max_bias_field=0.3,
        brightness_range=(-0.2, 0.2), contrast_range=(0.7, 1.3),
        rationale="a skin lesion has no canonical orientation: all flips and rotations are realistic"),
    ClinicalProfile(
        "unrestricted", allow_flip_axes=(0, 1, 2), max_rotation_deg=_INF, scale_range=(0.0, _INF),
        max_translation=_INF, max_shear=_INF, max_noise_std=_INF, gamma_range=(0.0, _INF), max_blur_sigma=_INF,
        max_bias_field=_INF, brightness_range=(-_INF, _INF), contrast_range=(0.0, _INF), allow_undeclared=True,
        rationale="no clinical limits (research, natural images)"),
)}


def list_profiles() -> list[str]:
    return sorted(PROFILES)


def get_profile(profile: str | ClinicalProfile) -> ClinicalProfile:
    """A built-in profile by name (or the profile itself)."""
    if isinstance(profile, ClinicalProfile):
        return profile
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a name or a ClinicalProfile, got {type(profile).__name__}")
    if profile not in PROFILES:
        close = difflib.get_close_matches(profile, PROFILES, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown clinical profile {profile!r}{hint} (known: {', '.join(list_profiles())})")
    return PROFILES[profile]


@dataclass(frozen=True)
class AugmentPipeline:
    """Transforms applied in order, validated against ``profile`` at construction (None = "unrestricted").

    ``pipeline(image, mask=None, generator=g)`` returns the image, or (image, mask); one generator feeds every
    transform in order, so a seed fixes the whole pipeline. Plain callables ``f(image, mask, generator=)`` are
    accepted when the profile allows undeclared transforms.
    """

    transforms: Sequence[Callable] = ()
    profile: str | ClinicalProfile | None = None
    _profile: ClinicalProfile = field(init=False, repr=False)

    def __post_init__(self) -> None:
        transforms = tuple(self.transforms)
        for t in transforms:
            if not callable(t):
                raise TypeError(f"AugmentPipeline: every transform must be callable, got {type(t).__name__}")
        profile = get_profile("unrestricted" if self.profile is None else self.profile)
        profile.check(transforms)
        object.__setattr__(self, "transforms", transforms)
        object.__setattr__(self, "_profile", profile)

    @property
    def clinical_profile(self) -> ClinicalProfile:
        return self._profile

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None):
        check_batch("AugmentPipeline", image, mask)
        for t in self.transforms:
            out = t(image, mask, generator=generator)
            image, mask = out if mask is not None else (out, None)
        return image if mask is None else (image, mask)


Compose = AugmentPipeline
