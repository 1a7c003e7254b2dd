"""Clinical profiles: refusals name transform, parameter, configured and allowed ranges; valid pipelines run."""
import dataclasses
import re

import pytest
import torch

from trainsdk.augment import (PROFILES, AugmentationPolicyError, AugmentPipeline, BiasField, BrightnessContrast,
                              ClinicalProfile, Compose, GaussianBlur, GaussianNoise, RandomAffine, RandomGamma,
                              get_profile, list_profiles, random_translate)


def _refusal(transforms, profile):
    with pytest.raises(AugmentationPolicyError) as info:
        AugmentPipeline(transforms, profile=profile)
    return info.value


def test_chest_xray_refuses_a_left_right_flip():
    err = _refusal([RandomAffine(flip_axes=(0,))], "chest_xray")
    assert err.profile == "chest_xray" and len(err.violations) == 1
    assert re.search(r"RandomAffine: flip_axes configured \(0,\) includes axis \[0\] .*allowed flip axes \(\)",
                     str(err))


def test_chest_xray_refuses_rotation_and_scale_beyond_its_limits():
    err = _refusal([RandomAffine(rotation_deg=30, scale=(0.8, 1.2))], "chest_xray")
    assert "RandomAffine: rotation_deg configured range (-30, 30) is outside the allowed (-15, 15)" in str(err)
    assert "RandomAffine: scale configured range (0.8, 1.2) is outside the allowed (0.9, 1.1)" in str(err)
    assert "'chest_xray'" in str(err) and len(err.violations) == 2


def test_limits_are_inclusive_and_gated_off_parameters_pass():
    ok = AugmentPipeline([RandomAffine(rotation_deg=15, scale=0.1, translation=0.1), GaussianNoise(0.05)],
                         profile="chest_xray")
    assert ok.clinical_profile is PROFILES["chest_xray"]
    AugmentPipeline([RandomAffine(rotation_deg=90, p_rotation=0.0, flip_axes=(0,), p_flip=0.0)], profile="chest_xray")


def test_kinds_a_profile_does_not_allow_are_refused():
    err = _refusal([RandomGamma(), BiasField(0.1), GaussianNoise(0.01)], "abdomen_ct")
    assert "RandomGamma: transform kind 'gamma' is not allowed by profile 'abdomen_ct'" in str(err)
    assert "BiasField: transform kind 'bias_field' is not allowed" in str(err)
    assert len(err.violations) == 2  # the noise is fine


def test_brain_mri_bias_field_and_3d_rotation_limits():
    AugmentPipeline([BiasField(0.3)], profile="brain_mri")
    err = _refusal([BiasField(0.8), RandomAffine(rotation_deg=((0, 0), (0, 0), (-20, 20)))], "brain_mri")
    assert "BiasField: bias_field configured range (-0.8, 0.8) is outside the allowed (-0.5, 0.5)" in str(err)
    assert "RandomAffine: rotation_deg configured range (-20, 20) is outside the allowed (-10, 10)" in str(err)


def test_intensity_limits_name_the_parameter():
    err = _refusal([GaussianNoise(0.2), GaussianBlur(3.0), BrightnessContrast(0.5, 0.5)], "chest_xray")
    text = str(err)
    assert "GaussianNoise: noise_std configured range (0, 0.2) is outside the allowed (0, 0.05)" in text
    assert "GaussianBlur: blur_sigma configured range (0, 3) is outside the allowed (0, 1)" in text
    assert "BrightnessContrast: brightness configured range (-0.5, 0.5) is outside the allowed (-0.1, 0.1)" in text
    assert "BrightnessContrast: contrast configured range (0.5, 1.5) is outside the allowed (0.8, 1.2)" in text


def test_dermoscopy_allows_all_flips_and_rotations():
    p = AugmentPipeline([RandomAffine(rotation_deg=180, flip_axes=(0, 1))], profile="dermoscopy")
    x = torch.rand(2, 3, 16, 16)
    assert p(x, generator=torch.Generator().manual_seed(0)).shape == x.shape


def test_undeclared_callables_need_a_permissive_profile():
    def shift(image, mask=None, generator=None):
        out = random_translate(image, 1, generator)
        return out if mask is None else (out, mask)

    err = _refusal([shift], "chest_xray")
    assert "shift: declares no policy_limits()" in str(err)
    x = torch.rand(2, 1, 8, 8)
    assert AugmentPipeline([shift]).clinical_profile.name == "unrestricted"
    assert AugmentPipeline([shift])(x, generator=torch.Generator().manual_seed(0)).shape == x.shape
    with pytest.raises(TypeError, match="must be callable"):
        AugmentPipeline([3])


def test_pipeline_is_deterministic_and_keeps_image_and_mask_aligned():
    p = Compose([RandomAffine(rotation_deg=10, translation=0.05, scale=0.1, mode="nearest"), GaussianNoise(0.0),
                 RandomGamma(0.2)], profile="brain_mri")
    labels = torch.zeros(3, 1, 24, 24, dtype=torch.long)
    labels[:, :, 6:16, 8:18] = 1
    img, m = p(labels.double(), labels, generator=torch.Generator().manual_seed(2))
    img2, m2 = p(labels.double(), labels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(img, img2) and torch.equal(m, m2)
    assert torch.equal(img > 0.5, m == 1)  # gamma keeps a binary image's 0/1 levels


def test_validated_transforms_cannot_be_changed_afterwards():
    t = RandomAffine(rotation_deg=10)
    AugmentPipeline([t], profile="chest_xray")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.rotation_deg = 90


def test_profile_lookup_and_custom_profiles():
    assert {"chest_xray", "brain_mri", "abdomen_ct", "dermoscopy", "unrestricted"} <= set(list_profiles())
    with pytest.raises(ValueError, match="unknown clinical profile 'chest_xrays'; did you mean 'chest_xray'"):
        get_profile("chest_xrays")
    custom = ClinicalProfile("knee_mri", allowed_transforms={"affine"}, allow_flip_axes=(1,), max_rotation_deg=5)
    AugmentPipeline([RandomAffine(rotation_deg=5, flip_axes=(1,))], profile=custom)
    err = _refusal([GaussianNoise(0.01)], custom)
    assert "kind 'noise' is not allowed by profile 'knee_mri' (allowed kinds: ['affine'])" in str(err)
    with pytest.raises(ValueError, match="unknown transform kinds \\['elastic'\\]"):
        ClinicalProfile("x", allowed_transforms={"affine", "elastic"})
    with pytest.raises(ValueError, match="scale_range must have low <= high"):
        ClinicalProfile("x", scale_range=(1.2, 0.8))
