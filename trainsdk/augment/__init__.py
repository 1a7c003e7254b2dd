"""Data augmentation for medical images: affine geometry, intensity, clinical limits, lesion synthesis.

- ``affine``: pixel-space matrices (rotation, translation, flip, scale, shear), ``compose``, ``to_theta`` for
  ``F.affine_grid``, ``apply_affine`` and ``RandomAffine`` (one composed warp per sample, image and mask together,
  through the fused ``trainsdk.ops.affine_warp``), 2D and 3D.
- ``intensity``: ``GaussianNoise``, ``RandomGamma``, ``GaussianBlur``, ``BiasField``, ``BrightnessContrast``.
- ``profiles``: ``ClinicalProfile`` limits and ``AugmentPipeline`` (alias ``Compose``), which refuses transforms
  outside them with ``AugmentationPolicyError``.
- ``lesion_synthesis``: ``paste_lesion`` (feathered or Poisson blending) and ``synthesize_lesions`` (new labeled
  samples from lesion and healthy images).
- ``basic.random_translate``: the cheap integer shift the demo uses.
"""
from .affine import (RandomAffine, apply_affine, compose, flip, identity, rotation, scaling, shear, to_theta,
                     translation)
from .basic import random_translate
from .intensity import BiasField, BrightnessContrast, GaussianBlur, GaussianNoise, RandomGamma, gaussian_blur
from .lesion_synthesis import (LesionPlacementError, LesionSamples, PastedLesion, paste_lesion, poisson_blend,
                               synthesize_lesions)
from .profiles import (PROFILES, AugmentationPolicyError, AugmentPipeline, ClinicalProfile, Compose, get_profile,
                       list_profiles)
from ._base import Transform

__all__ = [
    "random_translate",
    "identity", "rotation", "translation", "flip", "scaling", "shear", "compose", "to_theta", "apply_affine",
    "RandomAffine",
    "GaussianNoise", "RandomGamma", "GaussianBlur", "BiasField", "BrightnessContrast", "gaussian_blur",
    "ClinicalProfile", "AugmentPipeline", "Compose", "AugmentationPolicyError", "get_profile", "list_profiles",
    "PROFILES",
    "paste_lesion", "synthesize_lesions", "poisson_blend", "PastedLesion", "LesionSamples", "LesionPlacementError",
    "Transform",
]
